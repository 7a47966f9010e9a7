{{/* The release's full name: "registrar" for a release named registrar. */}}
{{- define "registrar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "registrar.serviceAccountName" -}}
{{- default (include "registrar.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "registrar.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "registrar.labels" -}}
{{ include "registrar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Registered By MutatingAdmissionPolicy registrar checks for before
reading a secret.sourceRef: the chart's own (named after the release), or
deploy/registered-by-policy.yaml's when the chart installs none. */}}
{{- define "registrar.registeredByPolicy" -}}
{{- if .Values.admissionPolicies.install -}}
{{- printf "%s-registered-by" (include "registrar.fullname" .) -}}
{{- else -}}
registrar-registered-by
{{- end -}}
{{- end }}

{{/* Who records Registered By and adds the revoke finalizer at admission:
"policies" (MutatingAdmissionPolicies, Kubernetes 1.36+) or "webhook"
(registrar's admission webhook). "auto" picks the policies where the cluster
serves them (helm asks the cluster; `helm template` assumes what
--kube-version and --api-versions say). Empty when the chart installs no
admission objects. */}}
{{- define "registrar.recorder" -}}
{{- if .Values.admissionPolicies.install -}}
{{- $recorder := .Values.admissionPolicies.recorder -}}
{{- if eq $recorder "auto" -}}
{{- if .Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy" -}}
policies
{{- else -}}
webhook
{{- end -}}
{{- else if has $recorder (list "policies" "webhook") -}}
{{- $recorder -}}
{{- else -}}
{{- fail (printf "admissionPolicies.recorder is %q: it must be auto, policies or webhook" $recorder) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where the webhook's certificate comes from: "cert-manager" or "chart". */}}
{{- define "registrar.webhookCertificate" -}}
{{- $source := .Values.admissionPolicies.webhook.certificate -}}
{{- if eq $source "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" -}}
cert-manager
{{- else -}}
chart
{{- end -}}
{{- else if has $source (list "chart" "cert-manager") -}}
{{- $source -}}
{{- else -}}
{{- fail (printf "admissionPolicies.webhook.certificate is %q: it must be auto, chart or cert-manager" $source) -}}
{{- end -}}
{{- end -}}
