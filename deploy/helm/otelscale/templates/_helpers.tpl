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
The client ports whose TLS Secret the chart mounts (tls.<port>.enabled), as a JSON list in the
order otlp-grpc, otlp-http, scaler.
*/}}
{{- define "otelscale.tlsPorts" -}}
{{- $ports := list }}
{{- range $port := list "otlp-grpc" "otlp-http" "scaler" }}
{{- if (index $.Values.tls $port | default dict).enabled }}
{{- $ports = append $ports $port }}
{{- end }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{/*
Where one port's TLS files are mounted. Argument: (list $ "<port>").
*/}}
{{- define "otelscale.tlsDir" -}}
{{- $root := index . 0 }}
{{- printf "%s/%s" (trimSuffix "/" $root.Values.tls.mountPath) (index . 1) }}
{{- end }}

{{/*
The kubernetes.io/tls Secret of one port: tls.<port>.secretName, or <fullname>-<port>-tls.
Argument: (list $ "<port>").
*/}}
{{- define "otelscale.tlsSecretName" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 }}
{{- (index $root.Values.tls $port).secretName | default (printf "%s-%s-tls" (include "otelscale.fullname" $root) $port) }}
{{- end }}

{{/*
The server's flags: `config` plus --snapshot-dir when the chart mounts the snapshot volume and
config does not name a directory itself, plus --<port>-tls-cert, -key and (with
requireClientCert) -client-ca pointing at the mounted Secret of each port in tls, where config
does not set that flag itself.
*/}}
{{- define "otelscale.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if and .Values.snapshots.enabled (not (get $config "snapshot-dir")) }}
{{- $_ := set $config "snapshot-dir" .Values.snapshots.mountPath }}
{{- end }}
{{- range $port := include "otelscale.tlsPorts" . | fromJsonArray }}
{{- $tls := index $.Values.tls $port }}
{{- $dir := include "otelscale.tlsDir" (list $ $port) }}
{{- $files := dict "cert" "tls.crt" "key" "tls.key" }}
{{- if $tls.requireClientCert }}
{{- $_ := set $files "client-ca" "client-ca.crt" }}
{{- end }}
{{- range $suffix, $file := $files }}
{{- $flag := printf "%s-tls-%s" $port $suffix }}
{{- if not (get $config $flag) }}
{{- $_ := set $config $flag (printf "%s/%s" $dir $file) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq (toString (get $config "io-uring")) "on") (get $config "otlp-http-tls-cert") }}
{{- fail "config.io-uring \"on\" cannot serve OTLP/HTTP with TLS (tls.otlp-http or config.otlp-http-tls-cert): the epoll back-end serves it, so use auto or off" }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/*
One projected volume per port in tls: tls.crt and tls.key from the port's Secret and, with
requireClientCert, client-ca.crt from the client CA key (in the same Secret or another one).
*/}}
{{- define "otelscale.tlsVolumes" -}}
{{- range $port := include "otelscale.tlsPorts" . | fromJsonArray }}
{{- $tls := index $.Values.tls $port }}
{{- $secret := include "otelscale.tlsSecretName" (list $ $port) }}
{{- $caSecret := $tls.clientCaSecretName | default $secret }}
{{- $caKey := $tls.clientCaKey | default "ca.crt" }}
- name: tls-{{ $port }}
  projected:
    sources:
      - secret:
          name: {{ $secret }}
          items:
            - key: tls.crt
              path: tls.crt
            - key: tls.key
              path: tls.key
            {{- if and $tls.requireClientCert (eq $caSecret $secret) }}
            - key: {{ $caKey }}
              path: client-ca.crt
            {{- end }}
      {{- if and $tls.requireClientCert (ne $caSecret $secret) }}
      - secret:
          name: {{ $caSecret }}
          items:
            - key: {{ $caKey }}
              path: client-ca.crt
      {{- end }}
{{- end }}
{{- end }}

{{/*
The mounts of those volumes: read-only, whole directories (a subPath mount would not be
updated when the Secret changes).
*/}}
{{- define "otelscale.tlsVolumeMounts" -}}
{{- range $port := include "otelscale.tlsPorts" . | fromJsonArray }}
- name: tls-{{ $port }}
  mountPath: {{ include "otelscale.tlsDir" (list $ $port) }}
  readOnly: true
{{- end }}
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
