"""The wire-mapping machinery behind :mod:`conductor_workers.models`.

:func:`wire` declares an attrs field together with its JSON name (and how to convert nested models
and status enums); :class:`WireModel` builds each class's load/dump tables once from that metadata and
gives every model ``from_json`` / ``to_json``, keeping undeclared server fields in ``extra``. Also here:
``_Status``, the base of the status enums (they print as the server spells them), and the small field
helpers (``_extra``, ``_built``) the model modules share.
"""
from __future__ import annotations

import enum
from collections import abc
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Tuple, Type, TypeVar

import attrs

_M = TypeVar("_M", bound="WireModel")


class _Status(str, enum.Enum):
    """A status as the server spells it; ``str()`` and f-strings give that spelling (``"COMPLETED"``)."""

    def __str__(self) -> str:
        return str(self.value)

    __format__ = str.__format__  # type: ignore[assignment]


def wire(
    name: str,
    default: Any = None,
    *,
    factory: Any = None,
    model: Optional[type] = None,
    many: bool = False,
    enum_type: Optional[Type[enum.Enum]] = None,
    converter: Any = None,
    lazy: bool = False,
) -> Any:
    """An attrs field that is serialised under the JSON key ``name``.

    ``lazy=True`` (with ``model``): ``from_json`` stores the raw JSON object and the class exposes a
    property that builds the model when asked; for nested objects that workers rarely read.
    """
    meta = {"wire": name, "model": model, "many": many, "enum": enum_type, "lazy": lazy}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta, converter=converter)
    return attrs.field(default=default, metadata=meta, converter=converter)


_Convert = Optional[Callable[[Any], Any]]


def _loader(model: Optional[Any], many: bool, enum_type: Optional[Type[enum.Enum]]) -> _Convert:
    """How to turn a JSON value into the attribute's value (None: use it as it is)."""
    if model is not None:
        if many:
            return lambda value: [model.from_json(i) if isinstance(i, abc.Mapping) else i for i in value]
        return lambda value: model.from_json(value) if isinstance(value, abc.Mapping) else value
    if enum_type is not None:

        def load_enum(value: Any) -> Any:
            try:
                return enum_type(value)
            except ValueError:
                return value  # a status from a newer server: keep the string, do not fail the poll

        return load_enum
    return None


def _dumper(model: Optional[Any], many: bool, enum_type: Optional[Type[enum.Enum]]) -> _Convert:
    """How to turn the attribute's value into JSON (None: use it as it is)."""
    if model is not None:
        if many:
            return lambda value: [i.to_json() if isinstance(i, WireModel) else i for i in value]
        return lambda value: value.to_json() if isinstance(value, WireModel) else value
    if enum_type is not None:
        return lambda value: value.value if isinstance(value, enum.Enum) else value
    return None


_Spec = Tuple[Dict[str, Tuple[str, _Convert]], Tuple[Tuple[str, str, _Convert], ...]]


class WireModel:
    """Mixin giving an attrs class ``from_json`` and ``to_json`` from its fields' ``wire`` names.

    The per-class tables are built once; parsing a polled Task is on every worker's hot path.
    """

    __slots__ = ()
    _specs: ClassVar[Dict[type, _Spec]] = {}

    @classmethod
    def _spec(cls) -> _Spec:
        spec = WireModel._specs.get(cls)
        if spec is None:
            fields = [f for f in attrs.fields(cls) if "wire" in f.metadata]  # type: ignore[arg-type]
            loads = {
                # attrs names the __init__ argument of a field "_x" "x"
                f.metadata["wire"]: (
                    f.name.lstrip("_"),
                    None if f.metadata["lazy"] else _loader(f.metadata["model"], f.metadata["many"], f.metadata["enum"]),
                )
                for f in fields
            }
            dumps = tuple(
                (f.name, f.metadata["wire"], _dumper(f.metadata["model"], f.metadata["many"], f.metadata["enum"]))
                for f in fields
            )
            spec = WireModel._specs[cls] = (loads, dumps)
        return spec

    @classmethod
    def from_json(cls: Type[_M], data: Mapping[str, Any]) -> _M:
        """Build from the server's JSON object; unknown keys go to ``extra``, ``null`` keeps defaults."""
        loads, _ = cls._spec()
        kwargs: Dict[str, Any] = {}
        extra: Dict[str, Any] = {}
        for key, value in data.items():
            entry = loads.get(key)
            if entry is None:
                extra[key] = value
            elif value is not None:
                attr, load = entry
                kwargs[attr] = value if load is None else load(value)
        if extra:
            kwargs["extra"] = extra
        return cls(**kwargs)

    def to_json(self) -> Dict[str, Any]:
        """The JSON object the server expects, without ``None`` values."""
        _, dumps = self._spec()
        out: Dict[str, Any] = dict(getattr(self, "extra", {}))
        for attr, wire_name, dump in dumps:
            value = getattr(self, attr)
            if value is not None:
                out[wire_name] = value if dump is None else dump(value)
        return out


def _built(model: Type[_M], value: Any) -> Optional[_M]:
    return model.from_json(value) if isinstance(value, abc.Mapping) else value


def _extra() -> Any:
    return attrs.field(factory=dict, repr=False, eq=False, kw_only=True)
