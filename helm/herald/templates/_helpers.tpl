{{/*
Names, labels, the rendered herald.toml, and the checks that refuse values
which would deploy a herald that cannot work.
*/}}

{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-herald, or the release name alone when it already says herald. */}}
{{- define "herald.fullname" -}}
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

{{- define "herald.headlessName" -}}
{{- printf "%s-headless" (include "herald.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The main Service and the pods are component "server"; the headless Service is
"peers"; the metrics Service (the ops port, for the ServiceMonitor) is
"metrics". The ServiceMonitor selects "metrics" only, or every pod would be
scraped more than once.
*/}}
{{- define "herald.serverComponent" -}}
app.kubernetes.io/component: server
{{- end }}

{{- define "herald.metricsComponent" -}}
app.kubernetes.io/component: metrics
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herald.secretName" -}}
{{- default (include "herald.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "herald.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "herald.isRedis" -}}
{{- if eq (.Values.config.engine.kind | default "memory") "redis" }}true{{ end }}
{{- end }}

{{/* The default key (tokens without kid) is RS256/ES256: a public key file, no HS secret. */}}
{{- define "herald.usesPublicKey" -}}
{{- if has (.Values.config.auth.algorithm | default "HS256") (list "RS256" "ES256") }}true{{ end }}
{{- end }}

{{/* herald gets a private key from the Secret to sign RS256/ES256 tokens with. */}}
{{- define "herald.signs" -}}
{{- if .Values.secret.signing }}true{{ end }}
{{- end }}

{{/* Where the projected volume puts the keys; the public key path matches herald.example.toml. */}}
{{- define "herald.publicKeyFile" -}}
/etc/herald/jwt.pub.pem
{{- end }}

{{- define "herald.privateKeyFile" -}}
/etc/herald/jwt.key.pem
{{- end }}

{{/*
An integer key of a table, or herald's own default when the key was removed
(set to null), so that checks never compute with 0: (list table key default).
*/}}
{{- define "herald.intOr" -}}
{{- $table := index . 0 | default dict }}
{{- $key := index . 1 }}
{{- $fallback := index . 2 }}
{{- if and (hasKey $table $key) (not (kindIs "invalid" (index $table $key))) }}
{{- int64 (index $table $key) }}
{{- else }}
{{- $fallback }}
{{- end }}
{{- end }}

{{/* preStop sleep + drain + grace, in whole seconds rounded up. */}}
{{- define "herald.minGraceSeconds" -}}
{{- $shutdown := .Values.config.shutdown | default dict }}
{{- $drain := include "herald.intOr" (list $shutdown "drain_ms" 10000) | int64 }}
{{- $grace := include "herald.intOr" (list $shutdown "grace_ms" 5000) | int64 }}
{{- add (int64 .Values.preStopSleepSeconds) (div (add $drain $grace 999) 1000) }}
{{- end }}

{{/*
The kubelet sends SIGKILL when this runs out, counting from before the preStop
hook, so it must cover the hook, herald's drain window and its grace deadline.
*/}}
{{- define "herald.terminationGracePeriodSeconds" -}}
{{- $min := include "herald.minGraceSeconds" . | int64 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $min (max 1 (int64 .Values.terminationGraceSlackSeconds)) }}
{{- else }}
{{- $set := int64 .Values.terminationGracePeriodSeconds }}
{{- if le $set $min }}
{{- fail (printf "herald: terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + shutdown.drain_ms + shutdown.grace_ms (%d s), or herald is killed mid-drain; leave it empty to compute it" $set $min) }}
{{- end }}
{{- $set }}
{{- end }}
{{- end }}

{{/* A value the TOML leaves out so herald's default applies: null or "". */}}
{{- define "herald.tomlOmit" -}}
{{- if or (kindIs "invalid" .) (and (kindIs "string" .) (eq . "")) }}true{{ end }}
{{- end }}

{{/* A non-empty list of tables, rendered as [[table.key]] blocks (TOML has no JSON objects). */}}
{{- define "herald.tomlTableList" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) }}{{ if kindIs "map" (first .) }}true{{ end }}{{ end }}
{{- end }}

{{/* key = value lines of a table's scalars and scalar arrays (toJson output is valid TOML for those,
and prints integers without the exponent Helm's float64 would get). */}}
{{- define "herald.tomlKeys" -}}
{{- range $key, $value := . }}
{{- if not (or (include "herald.tomlOmit" $value) (include "herald.tomlTableList" $value)) }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* One TOML table, its lists of tables after its own keys; nulls and empty strings are left out. */}}
{{- define "herald.tomlTable" -}}
{{- $title := index . 0 }}
{{- $table := index . 1 | default dict -}}
[{{ $title }}]
{{- include "herald.tomlKeys" $table }}
{{- range $key, $value := $table }}
{{- if include "herald.tomlTableList" $value }}
{{- range $item := $value }}

[[{{ $title }}.{{ $key }}]]
{{- include "herald.tomlKeys" $item }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herald.config" -}}
{{- $c := .Values.config }}
{{- $engine := dict "kind" ($c.engine.kind | default "memory") }}
{{- /* Redis keys only for the redis engine: the memory engine's config stays minimal. */}}
{{- if include "herald.isRedis" . }}
{{- $engine = omit $c.engine "url" "cluster_urls" }}
{{- if $c.engine.cluster_urls }}
{{- $_ := set $engine "cluster_urls" $c.engine.cluster_urls }}
{{- else }}
{{- $_ := set $engine "url" $c.engine.url }}
{{- end }}
{{- end }}
{{- /* Key files are mounted from the Secret by the Deployment; only their paths are written here. */}}
{{- $auth := omit ($c.auth | default dict) "keys" }}
{{- if include "herald.usesPublicKey" . }}
{{- $_ := set $auth "public_key_file" (include "herald.publicKeyFile" .) }}
{{- end }}
{{- if and (include "herald.signs" .) (not $c.auth.signing_kid) }}
{{- $_ := set $auth "private_key_file" (include "herald.privateKeyFile" .) }}
{{- end }}
{{- $keys := list }}
{{- range $key := $c.auth.keys | default list }}
{{- $key = pick $key "kid" "algorithm" "public_key" }}
{{- if and (include "herald.signs" $) (eq $key.kid ($c.auth.signing_kid | default "")) }}
{{- $_ := set $key "private_key_file" (include "herald.privateKeyFile" $) }}
{{- end }}
{{- $keys = append $keys $key }}
{{- end }}
{{- $_ := set $auth "keys" $keys -}}
# Rendered by the herald Helm chart from .Values.config: change the values, not this file.
# server.listen and server.ops_listen come from HERALD_SERVER__LISTEN and
# HERALD_SERVER__OPS_LISTEN; server.api_key, auth.secret and
# engine.password come from the Secret as HERALD_* environment variables; the
# *_file keys name PEM files mounted from the Secret.

{{ include "herald.tomlTable" (list "server" $c.server) }}

{{ include "herald.tomlTable" (list "engine" $engine) }}

{{ include "herald.tomlTable" (list "auth" $auth) }}
{{- range $section := list "limits" "websocket" "heartbeat" "outbox" "fanout" "channels" "rate_limits" "shutdown" "log" }}

{{ include "herald.tomlTable" (list $section (index $c $section)) }}
{{- end }}
{{- end }}

{{/*
Refuse values that render fine but deploy a broken herald. Included by the
Deployment, so every install and `helm template` runs it.
*/}}
{{- define "herald.validate" -}}
{{- $c := .Values.config }}
{{- $engine := $c.engine.kind | default "memory" }}
{{- $multi := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- if and (eq $engine "memory") $multi }}
{{- fail "herald: the memory engine runs on one pod only (each pod would see only its own publications); set replicaCount: 1 and autoscaling.enabled: false, or config.engine.kind: redis" }}
{{- end }}
{{- if and $multi $c.server.node_id }}
{{- fail "herald: config.server.node_id must be empty with more than one pod, so that each pod uses its own name" }}
{{- end }}
{{- if eq $engine "redis" }}
{{- if and (not $c.engine.url) (not $c.engine.cluster_urls) }}
{{- fail "herald: config.engine.kind is redis: set config.engine.url (redis://host:6379/0) or config.engine.cluster_urls" }}
{{- end }}
{{- if and $c.engine.url $c.engine.cluster_urls }}
{{- fail "herald: set config.engine.url or config.engine.cluster_urls, not both" }}
{{- end }}
{{- range $url := concat (list ($c.engine.url | default "")) ($c.engine.cluster_urls | default list) }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" $url }}
{{- fail "herald: a Redis URL holds a password, which would land in a ConfigMap; put it in secret.redisPassword or the existingSecret instead" }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (include "herald.usesPublicKey" .) (not .Values.secret.existingSecret) (not .Values.secret.jwtPublicKey) }}
{{- fail (printf "herald: config.auth.algorithm %s needs a public key: set secret.jwtPublicKey (PEM) or secret.existingSecret" $c.auth.algorithm) }}
{{- end }}
{{- /* Keys by kid: RS256/ES256 with an inline public key. An HS* kid key's secret could only be written into herald.toml, which is a ConfigMap. */}}
{{- $kids := list }}
{{- range $i, $key := $c.auth.keys | default list }}
{{- if not (has $key.algorithm (list "RS256" "ES256")) }}
{{- fail (printf "herald: config.auth.keys[%d] (kid %q) is %s: the chart takes RS256 and ES256 kid keys only, since herald reads a kid key's secret from herald.toml, which the chart keeps in a ConfigMap; see \"Keys, signing and sessions\" in the chart README" $i $key.kid $key.algorithm) }}
{{- end }}
{{- if not $key.public_key }}
{{- fail (printf "herald: config.auth.keys[%d] (kid %q) needs public_key (PEM)" $i $key.kid) }}
{{- end }}
{{- if has $key.kid $kids }}
{{- fail (printf "herald: config.auth.keys: kid %q is used twice" $key.kid) }}
{{- end }}
{{- $kids = append $kids $key.kid }}
{{- end }}
{{- $signingKid := $c.auth.signing_kid | default "" }}
{{- if and $signingKid (not (has $signingKid $kids)) }}
{{- fail (printf "herald: config.auth.signing_kid %q names no key in config.auth.keys" $signingKid) }}
{{- end }}
{{- if and $signingKid (not .Values.secret.signing) }}
{{- fail (printf "herald: config.auth.signing_kid %q is an RS256/ES256 key: herald needs its private key; set secret.signing: true and secret.jwtPrivateKey (or the existingSecret's key secret.keys.jwtPrivateKey)" $signingKid) }}
{{- end }}
{{- if .Values.secret.signing }}
{{- if not (or $signingKid (include "herald.usesPublicKey" .)) }}
{{- fail (printf "herald: secret.signing gives herald an RS256/ES256 private key, but it would sign with the default key, which is %s (signed with its secret): set config.auth.signing_kid to an RS256/ES256 key of config.auth.keys, or turn secret.signing off" ($c.auth.algorithm | default "HS256")) }}
{{- end }}
{{- if not (or .Values.secret.existingSecret .Values.secret.jwtPrivateKey) }}
{{- fail "herald: secret.signing needs the private key: set secret.jwtPrivateKey (PEM) or secret.existingSecret" }}
{{- end }}
{{- else if .Values.secret.jwtPrivateKey }}
{{- fail "herald: secret.jwtPrivateKey is set but unused: set secret.signing: true to let herald sign with it" }}
{{- end }}
{{- /* The same relations herald's docs require, with herald's defaults for keys set to null. */}}
{{- $maxMessage := include "herald.intOr" (list $c.limits "max_message_size" 65536) | int64 }}
{{- $maxData := include "herald.intOr" (list $c.limits "max_data_size" 61440) | int64 }}
{{- $outboxBytes := include "herald.intOr" (list $c.outbox "max_bytes" 1048576) | int64 }}
{{- if gt $maxData (sub $maxMessage 1024) }}
{{- fail (printf "herald: config.limits.max_data_size (%d) must be at most config.limits.max_message_size - 1024 (%d), so that a client's publish of that size fits in one message" $maxData (sub $maxMessage 1024)) }}
{{- end }}
{{- if lt $outboxBytes (add $maxData 1024) }}
{{- fail (printf "herald: config.outbox.max_bytes (%d) must be at least config.limits.max_data_size + 1024 (%d), or one maximum-size push would disconnect the client" $outboxBytes (add $maxData 1024)) }}
{{- end }}
{{- range $i, $ns := ($c.channels | default dict).namespaces | default list }}
{{- if and (eq ($ns.access | default "authenticated") "personal") (not (hasSuffix "*" $ns.pattern)) }}
{{- fail (printf "herald: config.channels.namespaces[%d]: personal namespace %q needs a prefix pattern ending in \"*\", such as \"inbox:*\"" $i $ns.pattern) }}
{{- end }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- $a := .Values.autoscaling }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail "herald: autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage $a.metrics) }}
{{- fail "herald: autoscaling needs a metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or metrics" }}
{{- end }}
{{- end }}
{{- /* herald parses environment values: "123456", "true", "[a]" or "{}" arrive as a number, boolean, array or table and fail the string key. */}}
{{- range $key := list "apiKey" "jwtSecret" "redisPassword" }}
{{- $value := index $.Values.secret $key | default "" | toString }}
{{- if regexMatch "^([-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)|true|false|\\[.*\\]|[{].*[}])$" $value }}
{{- fail (printf "herald: secret.%s looks like a number, boolean, array or table, and herald would not read it as text from the environment; use a different value" $key) }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if $pdb.enabled }}
{{- $hasMin := not (kindIs "invalid" $pdb.minAvailable) }}
{{- if not (or $hasMin (not (kindIs "invalid" $pdb.maxUnavailable))) }}
{{- fail "herald: podDisruptionBudget needs minAvailable or maxUnavailable" }}
{{- end }}
{{- $replicas := ternary (int .Values.autoscaling.minReplicas) (int .Values.replicaCount) .Values.autoscaling.enabled }}
{{- if and $hasMin (not (kindIs "string" $pdb.minAvailable)) (ge (int $pdb.minAvailable) $replicas) }}
{{- fail "herald: podDisruptionBudget.minAvailable is not below the replica count, so no pod could ever be evicted and node drains would hang" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Base64 data for a generated-if-empty secret: the given value, else the one an
earlier install stored, else 48 random characters. Letters and digits only,
so that herald's environment parsing always reads it as a string.
*/}}
{{- define "herald.secretValue" -}}
{{- $given := index . 0 }}
{{- $previous := index . 1 }}
{{- $key := index . 2 }}
{{- if $given }}
{{- b64enc $given }}
{{- else if hasKey $previous $key }}
{{- index $previous $key }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}
