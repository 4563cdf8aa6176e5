"""Exact Kubernetes quantities and a Pod's effective requests, shared by the quotas policies.

Not a policy module: the loader skips names starting with `_`. Policy modules load it next to their own
file (the policies folder is not a package):

    _quantity = helper_module(__file__, "_quantity")
    _quantity.parse("1.5Gi")            # Fraction(1610612736)

Values are `fractions.Fraction`, so `parse("0.1") * 3 == parse("300m")` holds exactly (a float would not).
The grammar is Kubernetes' (`resource.ParseQuantity`): a signed decimal number (`1`, `0.5`, `.5`, `1.`), then
nothing, a binary suffix (`Ki Mi Gi Ti Pi Ei`), a decimal suffix (`n u m k M G T P E`) or a decimal exponent
(`e3`, `E-2`); `1G` (10^9) is less than `1Gi` (2^30), `1e3m` is 1. As Kubernetes does, values are rounded up
to a whole number of nano units (1n).

Note for operators: the server reloads policies when a policy file changes, and this file is not one (its name
starts with `_`): after editing it, touch one of the quotas/*.py modules.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PATTERN = re.compile(rf"^({_NUMBER})(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?[0-9]+))?$")
_SUFFIXES = {
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_NANO = 10**9
_MAX_EXPONENT = 1000  # 1e1000 is no resource amount; refusing it keeps Fractions small

# Resources counted in bytes (printed with binary suffixes); anything else prints as a plain decimal or in m.
BYTE_RESOURCES = frozenset({"memory", "ephemeral-storage", "storage"})
# The resources that pod-level `spec.resources` may set (Kubernetes' PodLevelResources).
POD_LEVEL_RESOURCES = frozenset({"cpu", "memory"})


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def parse(value: Any) -> Fraction:
    """A quantity (a string such as `500m`, `1Gi`, `1e3`; or an int or float from hand-written YAML) as an
    exact Fraction, rounded up to nano units as Kubernetes does. Raises QuantityError."""
    if isinstance(value, bool) or value is None:
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"{value!r} is not a quantity")
        value = repr(value)  # the shortest text that reads back as this float: 0.1 stays 0.1
    if not isinstance(value, str):
        raise QuantityError(f"{value!r} is not a quantity")
    return _parse_text(value)


@functools.lru_cache(maxsize=1024)  # the same few texts on every request; a Fraction never changes
def _parse_text(value: str) -> Fraction:
    match = _PATTERN.match(value.strip())  # the API server trims spaces when it decodes a quantity
    if match is None:
        raise QuantityError(f"{value!r} is not a quantity (examples: 500m, 2, 1.5Gi, 1G, 1e3)")
    number, suffix, exponent = match.groups()
    amount = Fraction(number)
    if exponent is not None:
        power = int(exponent)
        if abs(power) > _MAX_EXPONENT:
            raise QuantityError(f"{value!r}: the exponent is out of range")
        amount *= Fraction(10) ** power
    else:
        amount *= _SUFFIXES[suffix or ""]
    nanos = amount * _NANO
    if nanos.denominator != 1:  # Kubernetes rounds up (away from zero) to the nano unit
        nanos = Fraction(math.ceil(nanos) if nanos > 0 else math.floor(nanos))
    return nanos / _NANO


def try_parse(value: Any) -> Fraction | None:
    """parse(), or None when the value is not a quantity."""
    try:
        return parse(value)
    except QuantityError:
        return None


def format_quantity(value: Fraction, resource: str = "") -> str:
    """A readable text: bytes in their shortest exact form (`1536Mi`, `2Gi`, `1G`); other resources as a
    whole number, in milli units (`1500m`), or as a decimal (to the nano unit, rounded up)."""
    if value < 0:
        return "-" + format_quantity(-value, resource)
    if resource in BYTE_RESOURCES and value.denominator == 1 and value:
        candidates = [str(value.numerator)]
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki", "E", "P", "T", "G", "M", "k"):
            scaled = value / _SUFFIXES[suffix]
            if scaled.denominator == 1:
                candidates.append(f"{scaled.numerator}{suffix}")
        return min(candidates, key=len)  # the shortest exact form: 1536Mi, 1G, 2Gi
    if value.denominator == 1:
        return str(value.numerator)
    milli = value * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    whole, rest = divmod(math.ceil(value * _NANO), _NANO)
    return f"{whole}.{rest:09d}".rstrip("0")


def escape_pointer(token: str) -> str:
    """A JSON Pointer reference token (RFC 6901): `nvidia.com/gpu` becomes `nvidia.com~1gpu`."""
    return token.replace("~", "~0").replace("/", "~1")


# --- what a Pod asks of its node -------------------------------------------------------------------------------


def container_requests(container: Any) -> dict[str, Fraction]:
    """A container's requests; a resource with a limit and no request counts its limit, as the API server
    defaults a Pod's missing request to its limit. Values that are not quantities are left out."""
    if not isinstance(container, Mapping):
        return {}
    resources = container.get("resources")
    resources = resources if isinstance(resources, Mapping) else {}
    found: dict[str, Fraction] = {}
    for section in ("limits", "requests"):  # requests win over limits
        values = resources.get(section)
        for name, value in (values.items() if isinstance(values, Mapping) else ()):
            amount = try_parse(value)
            if amount is not None:
                found[str(name)] = amount
    return found


def _add(total: dict[str, Fraction], more: Mapping[str, Fraction]) -> None:
    for name, amount in more.items():
        total[name] = total.get(name, Fraction(0)) + amount


def _max(total: dict[str, Fraction], other: Mapping[str, Fraction]) -> None:
    for name, amount in other.items():
        if amount > total.get(name, Fraction(0)):
            total[name] = amount


def is_sidecar(container: Any) -> bool:
    """An init container with restartPolicy Always runs for the Pod's whole life, like a container."""
    return isinstance(container, Mapping) and container.get("restartPolicy") == "Always"


def pod_requests(spec: Any) -> dict[str, Fraction]:
    """The requests a Pod is scheduled and quota-charged with, as Kubernetes computes them
    (`resourcehelper.PodRequests`):

    - the sum of the containers' requests, plus every sidecar's (init containers with restartPolicy Always);
    - at least, per resource, the largest need of an ordinary init container, which runs alone except for the
      sidecars started before it (its request plus theirs);
    - pod-level `spec.resources.requests` (cpu, memory), when set, replace the containers' total;
    - plus `spec.overhead` (set from the RuntimeClass).
    """
    if not isinstance(spec, Mapping):
        return {}
    total: dict[str, Fraction] = {}
    for container in spec.get("containers") or ():
        _add(total, container_requests(container))
    sidecars: dict[str, Fraction] = {}
    init_peak: dict[str, Fraction] = {}
    for container in spec.get("initContainers") or ():
        requests = container_requests(container)
        if is_sidecar(container):
            _add(total, requests)
            _add(sidecars, requests)
            _max(init_peak, sidecars)
        else:
            running = dict(sidecars)
            _add(running, requests)
            _max(init_peak, running)
    _max(total, init_peak)
    pod_level = container_requests({"resources": spec.get("resources")})
    for name, amount in pod_level.items():
        if name in POD_LEVEL_RESOURCES:
            total[name] = amount
    overhead = spec.get("overhead")
    for name, value in (overhead.items() if isinstance(overhead, Mapping) else ()):
        extra = try_parse(value)
        if extra is not None:
            total[str(name)] = total.get(str(name), Fraction(0)) + extra
    return total
