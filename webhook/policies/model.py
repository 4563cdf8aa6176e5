"""Wire models of the own `Policy` kind: ValidatingAdmissionPolicy field names plus params and mutations."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

POLICY_API_VERSION = "webhook.dev/v1alpha1"
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT", "*"]
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_CEL_IDENTIFIER = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
_QUALIFIED_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class Model(BaseModel):
    """Strict wire model: unknown fields are errors, names are spelled as in Kubernetes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LabelSelectorRequirement(Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty values list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(Model):
    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class RuleWithOperations(Model):
    """One rule of matchConstraints, as NamedRuleWithOperations in admissionregistration/v1."""

    apiGroups: Annotated[list[str], Field(min_length=1)]
    apiVersions: Annotated[list[str], Field(min_length=1)]
    operations: Annotated[list[Operation], Field(min_length=1)]
    resources: Annotated[list[str], Field(min_length=1)]
    resourceNames: list[str] = Field(default_factory=list)
    scope: Literal["Cluster", "Namespaced", "*"] = "*"

    @field_validator("apiGroups", "apiVersions", "operations")
    @classmethod
    def _wildcard_alone(cls, values: list[str]) -> list[str]:
        if "*" in values and len(values) > 1:
            raise ValueError("if '*' is present, it must be the only entry (as the API server requires)")
        return values

    @field_validator("resources")
    @classmethod
    def _resources(cls, values: list[str]) -> list[str]:
        """The API server's rules for resource patterns (validateResources in admissionregistration)."""
        if any(not value for value in values):
            raise ValueError("resources must not contain an empty string")
        if "*/*" in values and len(values) > 1:
            raise ValueError("if '*/*' is present, it must be the only entry")
        if "*" in values and any("/" not in value and value != "*" for value in values):
            raise ValueError("if '*' is present, other entries must name subresources (like '*/scale')")
        return values


class MatchResources(Model):
    namespaceSelector: LabelSelector = Field(default_factory=LabelSelector)
    objectSelector: LabelSelector = Field(default_factory=LabelSelector)
    resourceRules: Annotated[list[RuleWithOperations], Field(min_length=1)]
    excludeResourceRules: list[RuleWithOperations] = Field(default_factory=list)
    matchPolicy: Literal["Exact", "Equivalent"] = "Equivalent"


class BindingMatchResources(MatchResources):
    """A binding's matchResources: without resourceRules it does not narrow what the policy matches."""

    resourceRules: list[RuleWithOperations] = Field(default_factory=list)


class ParamKind(Model):
    apiVersion: str
    kind: str


class ParamRef(Model):
    """Which params objects a binding gives its policy: one by name, or every one a selector matches."""

    name: str | None = None
    namespace: str | None = None
    selector: LabelSelector | None = None
    parameterNotFoundAction: Literal["Allow", "Deny"] | None = None

    @model_validator(mode="after")
    def _name_or_selector(self) -> ParamRef:
        if (self.name is None) == (self.selector is None):
            raise ValueError("give exactly one of name or selector")
        return self


class MatchCondition(Model):
    name: str
    expression: str

    @field_validator("name")
    @classmethod
    def _qualified_name(cls, name: str) -> str:
        if len(name) > 63 or not _QUALIFIED_NAME_PART.match(name):
            raise ValueError(f"{name!r} must be a qualified name ([A-Za-z0-9][-A-Za-z0-9_.]*, at most 63 bytes)")
        return name


class Variable(Model):
    name: str
    expression: str

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not _CEL_IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a CEL identifier (letters, digits and _, not starting with a digit)")
        return name


class Validation(Model):
    expression: str
    message: str | None = None
    messageExpression: str | None = None
    reason: Literal["Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"] | None = None


class AuditAnnotation(Model):
    key: str
    valueExpression: str

    @field_validator("key")
    @classmethod
    def _qualified_name(cls, key: str) -> str:
        if len(key) > 63 or not _QUALIFIED_NAME_PART.match(key):
            raise ValueError(f"{key!r} must be a qualified name ([A-Za-z0-9][-A-Za-z0-9_.]*, at most 63 bytes)")
        return key


class Mutation(Model):
    """One JSONPatch operation (value literal or CEL), or `patchesExpression` returning a list of them."""

    op: Literal["add", "remove", "replace", "move", "copy", "test"] | None = None
    path: str | None = None
    from_: str | None = Field(default=None, alias="from")
    value: Any = None
    valueExpression: str | None = None
    condition: str | None = None
    patchesExpression: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Mutation:
        if self.patchesExpression is not None:
            if self.op or self.path or self.from_ or self.value is not None or self.valueExpression:
                raise ValueError("patchesExpression stands alone: drop op, path, from, value and valueExpression")
            return self
        if self.op is None or self.path is None:
            raise ValueError("a mutation needs op and path (or patchesExpression)")
        if self.op in ("move", "copy") and self.from_ is None:
            raise ValueError(f"op {self.op} needs from")
        if self.op in ("add", "replace", "test") and self.value is None and self.valueExpression is None:
            raise ValueError(f"op {self.op} needs value or valueExpression")
        if self.value is not None and self.valueExpression is not None:
            raise ValueError("give value or valueExpression, not both")
        return self


class ObjectMeta(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_subdomain(cls, name: str) -> str:
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise ValueError(f"{name!r} is not a DNS subdomain name (lower case letters, digits, '-' and '.')")
        return name


class PolicySpec(Model):
    # True: the policy also applies to the pod templates of Deployments, StatefulSets, DaemonSets,
    # ReplicaSets, Jobs and CronJobs, with variables podSpec, podMetadata, oldPodSpec and podSpecPath.
    podTemplates: bool = False
    failurePolicy: Literal["Fail", "Ignore"] = "Fail"
    validationActions: Annotated[list[Literal["Deny", "Warn", "Audit"]], Field(min_length=1)] = ["Deny"]
    matchConstraints: MatchResources
    matchConditions: list[MatchCondition] = Field(default_factory=list)
    params: Any = None
    variables: list[Variable] = Field(default_factory=list)
    validations: list[Validation] = Field(default_factory=list)
    auditAnnotations: list[AuditAnnotation] = Field(default_factory=list)
    mutations: list[Mutation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> PolicySpec:
        actions = set(self.validationActions)
        if len(actions) != len(self.validationActions):
            raise ValueError("validationActions lists an action twice")
        if {"Deny", "Warn"} <= actions:
            raise ValueError("validationActions cannot hold both Deny and Warn (Deny already reports)")
        if not (self.validations or self.auditAnnotations or self.mutations):
            raise ValueError("the policy does nothing: give validations, auditAnnotations or mutations")
        for kind, items in (("matchConditions", self.matchConditions), ("variables", self.variables)):
            names = [item.name for item in items]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(duplicates)}")
        keys = [annotation.key for annotation in self.auditAnnotations]
        if len(set(keys)) != len(keys):
            raise ValueError("auditAnnotations keys must be unique")
        return self


class PolicyDocument(Model):
    """A whole `kind: Policy` document."""

    apiVersion: Literal["webhook.dev/v1alpha1"]
    kind: Literal["Policy"]
    metadata: ObjectMeta
    spec: PolicySpec
