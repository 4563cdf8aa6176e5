{{/* The chart name, or nameOverride. */}}
{{- define "webhook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of namespaced objects: fullnameOverride, or <release>-<name> (just <release> when it
     already contains the name). */}}
{{- define "webhook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Cluster-scoped objects (ClusterRoles, webhook configurations) carry the namespace too, so that the
     same release name in two namespaces does not collide. */}}
{{- define "webhook.clusterName" -}}
{{- printf "%s-%s" (include "webhook.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "webhook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "webhook.labels" -}}
helm.sh/chart: {{ include "webhook.chart" . }}
{{ include "webhook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "webhook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap mounted at /etc/webhook/policies; empty when the image's shipped policies are used. */}}
{{- define "webhook.policiesConfigMap" -}}
{{- if .Values.policies.existingConfigMap }}
{{- .Values.policies.existingConfigMap }}
{{- else if .Values.policies.files }}
{{- printf "%s-policies" (include "webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret with subscribers.yaml; empty when there are no subscribers (no events). */}}
{{- define "webhook.subscribersSecret" -}}
{{- if .Values.events.existingSecret }}
{{- .Values.events.existingSecret }}
{{- else if .Values.events.subscribers }}
{{- printf "%s-subscribers" (include "webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/* The kubernetes.io/tls Secret with the serving certificate. */}}
{{- define "webhook.tlsSecret" -}}
{{- if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.existingSecret is required when certificates.mode is existingSecret" .Values.certificates.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/* The names the API server uses for the Service. */}}
{{- define "webhook.dnsNames" -}}
{{- $fullname := include "webhook.fullname" . }}
{{- $ns := .Release.Namespace -}}
- {{ $fullname }}
- {{ printf "%s.%s" $fullname $ns }}
- {{ printf "%s.%s.svc" $fullname $ns }}
- {{ printf "%s.%s.svc.%s" $fullname $ns .Values.clusterDomain }}
{{- end }}

{{/* certificates.mode helm: the CA and serving certificate as YAML {caCert, cert, key} (PEM). Kept from the
     existing Secret when there is one (upgrades); generated otherwise. Generated once per render and kept
     on the root context, because the Secret and the webhook configurations (caBundle) are different
     templates and must carry the same CA. Call it with the root context: include "webhook.helmCertificates" $ */}}
{{- define "webhook.helmCertificates" -}}
{{- if not (hasKey . "webhookHelmCertificates") }}
{{- $certificates := dict }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "webhook.tlsSecret" .) }}
{{- $data := dict }}
{{- if $existing }}
{{- $data = $existing.data | default dict }}
{{- end }}
{{- if and (hasKey $data "ca.crt") (hasKey $data "tls.crt") (hasKey $data "tls.key") }}
{{- $certificates = dict "caCert" (index $data "ca.crt" | b64dec) "cert" (index $data "tls.crt" | b64dec) "key" (index $data "tls.key" | b64dec) }}
{{- else }}
{{- $fullname := include "webhook.fullname" . }}
{{- $days := int .Values.certificates.helm.validityDays }}
{{- $ca := genCA (printf "%s-ca" $fullname) $days }}
{{- $names := include "webhook.dnsNames" . | fromYamlArray }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $fullname .Release.Namespace) nil $names $days $ca }}
{{- $certificates = dict "caCert" $ca.Cert "cert" $cert.Cert "key" $cert.Key }}
{{- end }}
{{- $_ := set . "webhookHelmCertificates" $certificates }}
{{- end }}
{{- toYaml (get . "webhookHelmCertificates") }}
{{- end }}

{{/* The caBundle of the webhook configurations (none in certManager mode: cert-manager injects it). */}}
{{- define "webhook.caBundle" -}}
{{- if eq .Values.certificates.mode "helm" }}
{{- (include "webhook.helmCertificates" . | fromYaml).caCert | b64enc }}
{{- else if eq .Values.certificates.mode "existingSecret" }}
{{- required "certificates.caBundle is required when certificates.mode is existingSecret" .Values.certificates.caBundle }}
{{- end }}
{{- end }}

{{/* The webhook configurations' annotations: cert-manager's CA injection. */}}
{{- define "webhook.configurationAnnotations" -}}
{{- if eq .Values.certificates.mode "certManager" -}}
cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "webhook.fullname" .) }}
{{- end }}
{{- end }}
