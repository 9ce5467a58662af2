{{/*
Expand the name of the chart.
*/}}
{{- define "audience-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "audience-gateway.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "audience-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "audience-gateway.labels" -}}
helm.sh/chart: {{ include "audience-gateway.chart" . }}
{{ include "audience-gateway.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "audience-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "audience-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "audience-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "audience-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: tag defaults to the chart's appVersion; a digest wins over the tag.
*/}}
{{- define "audience-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The container port: the gateway's own server.port, so the two cannot disagree.
*/}}
{{- define "audience-gateway.port" -}}
{{- .Values.config.server.port | default 8080 | int }}
{{- end }}

{{/*
terminationGracePeriodSeconds = preStop sleep + the gateway's own drain pause (rounded
up to seconds, 0 by default) + its shutdown grace + margin. Kubernetes counts the preStop
hook against the grace period and sends SIGTERM only after the hook, so the process
still has drain + shutdown_grace_secs + margin left.
*/}}
{{- define "audience-gateway.terminationGracePeriodSeconds" -}}
{{- $grace := .Values.config.server.shutdown_grace_secs | default 25 | int }}
{{- $drainMs := .Values.config.server.shutdown_drain_ms | default 0 | int }}
{{- $drain := div (add $drainMs 999) 1000 }}
{{- add (.Values.shutdown.preStopSleepSeconds | int) $drain $grace (.Values.shutdown.extraGraceSeconds | int) }}
{{- end }}

{{/*
Name of the Secret holding the secret settings.
*/}}
{{- define "audience-gateway.secretName" -}}
{{- if and .Values.secret.create .Values.secret.existingSecret }}
{{- fail "secret.create and secret.existingSecret are mutually exclusive" }}
{{- end }}
{{- .Values.secret.existingSecret | default (include "audience-gateway.fullname" .) }}
{{- end }}

{{/*
True ("true") when a public-key source is configured, so HS256's secret becomes optional.
*/}}
{{- define "audience-gateway.hasPublicKey" -}}
{{- $a := .Values.config.auth | default dict }}
{{- if or $a.jwks_url $a.public_key_pem $a.public_key_pem_file }}true{{ end }}
{{- end }}

{{/*
True ("true") when HS256 is an allowed algorithm (the gateway's default list has it).
*/}}
{{- define "audience-gateway.wantsHS256" -}}
{{- $a := .Values.config.auth | default dict }}
{{- if or (not (hasKey $a "algorithms")) (has "HS256" ($a.algorithms | default list)) }}true{{ end }}
{{- end }}

{{/*
One TOML value. YAML numbers reach templates as float64, so whole numbers are printed
as integers (the gateway's settings are integers and `toToml` would write 8080.0).
Strings use JSON escapes, which are valid in TOML basic strings.
*/}}
{{- define "audience-gateway.tomlValue" -}}
{{- $k := kindOf . -}}
{{- if eq $k "string" -}}
{{- toJson . -}}
{{- else if eq $k "bool" -}}
{{- . -}}
{{- else if or (eq $k "float64") (eq $k "float32") -}}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end -}}
{{- else if has $k (list "int" "int8" "int16" "int32" "int64" "uint" "uint8" "uint16" "uint32" "uint64") -}}
{{- . -}}
{{- else if eq $k "slice" -}}
[{{ range $i, $e := . }}{{ if $i }}, {{ end }}{{ include "audience-gateway.tomlValue" $e }}{{ end }}]
{{- else -}}
{{- fail (printf "config: a %s cannot be written as a TOML value" $k) -}}
{{- end -}}
{{- end }}

{{/*
The gateway config file: one [section] per map under .Values.config, empty strings and
nulls left out so the gateway's own defaults apply.
*/}}
{{- define "audience-gateway.configToml" -}}
# Rendered by the audience-gateway Helm chart from .Values.config.
{{- range $section, $keys := .Values.config }}
{{- if kindIs "map" $keys }}
{{- $lines := list }}
{{- range $key, $value := $keys }}
{{- if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
{{- $lines = append $lines (printf "%s = %s" $key (include "audience-gateway.tomlValue" $value)) }}
{{- end }}
{{- end }}
{{- if $lines }}

[{{ $section }}]
{{ join "\n" $lines }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
GATEWAY_REDIS__URL built from redis.topology, nodes, sentinelMaster, db and tls.enabled
(no credentials: those come from the Secret).
*/}}
{{- define "audience-gateway.redisUrl" -}}
{{- $r := .Values.redis -}}
{{- $scheme := ternary "rediss" "redis" $r.tls.enabled -}}
{{- if eq $r.topology "sentinel" -}}
{{- printf "%s+sentinel://%s/%s/%d" $scheme (join "," $r.nodes) $r.sentinelMaster (int $r.db) -}}
{{- else if eq $r.topology "cluster" -}}
{{- printf "%s+cluster://%s" $scheme (join "," $r.nodes) -}}
{{- else -}}
{{- printf "%s://%s/%d" $scheme (first $r.nodes) (int $r.db) -}}
{{- end -}}
{{- end }}
