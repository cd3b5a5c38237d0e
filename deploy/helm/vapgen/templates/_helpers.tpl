{{/* Chart name. */}}
{{- define "vapgen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name if it contains the chart name, else release-chart. */}}
{{- define "vapgen.fullname" -}}
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

{{- define "vapgen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vapgen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "vapgen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vapgen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vapgen
{{- end }}

{{- define "vapgen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vapgen.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vapgen.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "vapgen.moduleConfigMapName" -}}
{{- default (printf "%s-decision-module" (include "vapgen.fullname" .)) .Values.module.configMap.name }}
{{- end }}

{{/* Fails on values that cannot work. */}}
{{- define "vapgen.validate" -}}
{{- if not (has .Values.mode (list "coexist" "standalone")) }}
{{- fail (printf "mode must be coexist or standalone, not %q" .Values.mode) }}
{{- end }}
{{- if not (has .Values.module.source (list "bundled" "configMap" "volume")) }}
{{- fail (printf "module.source must be bundled, configMap or volume, not %q" .Values.module.source) }}
{{- end }}
{{- if and (ne .Values.module.source "bundled") (not .Values.module.sha256) }}
{{- fail "module.sha256 is required for a module from a configMap or volume (vapgen describe --module FILE prints it)" }}
{{- end }}
{{- if and .Values.module.sha256 (not (regexMatch "^[0-9a-fA-F]{64}$" .Values.module.sha256)) }}
{{- fail "module.sha256 must be 64 hex digits" }}
{{- end }}
{{- if and (eq .Values.module.source "configMap") .Values.module.configMap.create (not .Values.module.configMap.binaryData) }}
{{- fail "module.configMap.binaryData (base64 of the module) is required with module.configMap.create" }}
{{- end }}
{{- if and (eq .Values.module.source "volume") (not .Values.module.volume) }}
{{- fail "module.volume (a volume source) is required with module.source=volume" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "leaderElection.enabled=false needs replicaCount=1 (one writer)" }}
{{- end }}
{{- end }}
