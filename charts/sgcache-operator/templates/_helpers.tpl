{{- define "sgcache-operator.name" -}}sgcache-operator{{- end }}

{{- define "sgcache-operator.fullname" -}}
{{- if contains "sgcache-operator" .Release.Name }}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}{{ printf "%s-sgcache-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "sgcache-operator.selectorLabels" -}}
app.kubernetes.io/name: sgcache-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sgcache-operator.labels" -}}
{{ include "sgcache-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "sgcache-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ default (include "sgcache-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}{{ default "default" .Values.serviceAccount.name }}{{ end }}
{{- end }}
