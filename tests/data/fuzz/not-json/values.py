"""A Python mutation whose value is not JSON: a fault of the policy, never an HTTP 500."""

import datetime

from webhook import AdmissionRequest, mutating, patch


@mutating("python-set-value", resources=["pods"], object_selector={"matchLabels": {"case": "python-set-value"}})
def set_value(request: AdmissionRequest):
    return patch({"op": "add", "path": "/metadata/annotations/x", "value": {"a", "b"}})


@mutating("python-timedelta-value", resources=["pods"],
          object_selector={"matchLabels": {"case": "python-timedelta-value"}})
def timedelta_value(request: AdmissionRequest):
    return patch({"op": "add", "path": "/metadata/annotations/x", "value": datetime.timedelta(hours=1)})
