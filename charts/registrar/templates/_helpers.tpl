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
