"""Policies that misbehave on purpose, chosen by the Pod's `runaway` label."""

import time

from webhook import AdmissionRequest, deny, validating


@validating("runaway-python", resources=["pods"], operations=["CREATE"], failure_policy="Fail")
def runaway(request: AdmissionRequest):
    mode = (request.object.get("metadata", {}).get("labels") or {}).get("runaway", "")
    if mode == "loop":
        while True:
            try:  # noqa: SIM105 - a policy that swallows errors must still be stopped
                pass
            except Exception:
                pass
    if mode == "sleep":
        time.sleep(3600)
    if mode == "allocate":  # past --memory-limit-mb at once: MemoryError
        return deny(str(len(bytearray(4 * 1024**3))))
    if mode == "hoard":  # little by little: the deadline or the memory limit, whichever comes first
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))
    if mode == "huge":
        return deny("x" * (10**10))
    return None


@validating("runaway-ignored", resources=["pods"], operations=["CREATE"], failure_policy="Ignore")
def ignored(request: AdmissionRequest):
    if (request.object.get("metadata", {}).get("labels") or {}).get("runaway") == "ignored-loop":
        while True:
            time.sleep(0.01)
