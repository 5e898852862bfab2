{{/*
Names, labels and the server's arguments, shared by every template.
*/}}

{{- define "otelscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name, with the chart name in front unless it is already
in it. At most 63 characters (a DNS label).
*/}}
{{- define "otelscale.fullname" -}}
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

{{- define "otelscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "otelscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otelscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "otelscale.labels" -}}
helm.sh/chart: {{ include "otelscale.chart" . }}
{{ include "otelscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: autoscaler
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "otelscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otelscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "otelscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The server's flags: `config` plus --snapshot-dir when the chart mounts the snapshot volume and
config does not name a directory itself.
*/}}
{{- define "otelscale.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if and .Values.snapshots.enabled (not (get $config "snapshot-dir")) }}
{{- $_ := set $config "snapshot-dir" .Values.snapshots.mountPath }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/*
One `--flag=value` argument per set key of the config, in key order. Numbers are printed as
integers: values arrive as float64, and a float64 would print as 1.6777216e+07.
*/}}
{{- define "otelscale.args" -}}
{{- $config := include "otelscale.config" . | fromJson }}
{{- range $flag, $value := $config }}
{{- if kindIs "bool" $value }}
{{- if $value }}
- {{ printf "--%s" $flag | quote }}
{{- end }}
{{- else if kindIs "float64" $value }}
- {{ printf "--%s=%d" $flag (int64 $value) | quote }}
{{- else if or (kindIs "int" $value) (kindIs "int64" $value) }}
- {{ printf "--%s=%d" $flag (int64 $value) | quote }}
{{- else if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
- {{ printf "--%s=%s" $flag (toString $value) | quote }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The port number at the end of a listen address such as 0.0.0.0:4317 or [::]:4317.
*/}}
{{- define "otelscale.addressPort" -}}
{{- $port := regexFind "[0-9]+$" (toString .) }}
{{- if not $port }}
{{- fail (printf "listen address %q does not end in a port" .) }}
{{- end }}
{{- $port }}
{{- end }}
