{{/* Name of the chart, overridable. */}}
{{- define "streamflow-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or the release name when it already holds the chart name. */}}
{{- define "streamflow-operator.fullname" -}}
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

{{- define "streamflow-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamflow-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamflow-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "streamflow-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamflow
{{- end }}

{{- define "streamflow-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamflow-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "streamflow-operator.stageServiceAccountName" -}}
{{- default "streamflow-stage" .Values.stageServiceAccount.name }}
{{- end }}

{{/* The Prometheus job label of the operator's metrics: the ServiceMonitor takes it from the Service name. */}}
{{- define "streamflow-operator.metricsJob" -}}
{{- include "streamflow-operator.fullname" . }}-metrics
{{- end }}

{{/* Label matchers of the operator's own series, as scraped through the ServiceMonitor. */}}
{{- define "streamflow-operator.metricsSelector" -}}
job="{{ include "streamflow-operator.metricsJob" . }}", namespace="{{ .Release.Namespace }}"
{{- end }}
