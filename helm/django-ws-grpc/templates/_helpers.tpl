{{/*
Names. The base name is cut to 40 characters so that the longest derived name,
"<fullname>-broker-headless", stays a valid 63-character DNS label. Resources are named
after the project, django-ws, not after the chart (django-ws-grpc, the distribution's
name): renaming the chart did not rename the resources of installed releases.
*/}}
{{- define "django-ws.name" -}}
{{- default "django-ws" .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "django-ws.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default "django-ws" .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "django-ws.edge.fullname" -}}
{{- printf "%s-edge" (include "django-ws.fullname" .) }}
{{- end }}

{{- define "django-ws.broker.fullname" -}}
{{- printf "%s-broker" (include "django-ws.fullname" .) }}
{{- end }}

{{- define "django-ws.broker.headless" -}}
{{- printf "%s-broker-headless" (include "django-ws.fullname" .) }}
{{- end }}

{{/*
Labels. Selectors use name, instance and component only: they must never
change between upgrades.
*/}}
{{- define "django-ws.selectorLabels" -}}
app.kubernetes.io/name: {{ include "django-ws.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "django-ws.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "django-ws.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: django-ws
{{- end }}

{{- define "django-ws.edge.selectorLabels" -}}
{{ include "django-ws.selectorLabels" . }}
app.kubernetes.io/component: edge
{{- end }}

{{- define "django-ws.broker.selectorLabels" -}}
{{ include "django-ws.selectorLabels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "django-ws.edge.labels" -}}
{{ include "django-ws.labels" . }}
app.kubernetes.io/component: edge
{{- end }}

{{- define "django-ws.broker.labels" -}}
{{ include "django-ws.labels" . }}
app.kubernetes.io/component: broker
{{- end }}

{{- define "django-ws.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
The brokers' addresses as DJANGO_WS_BROKERS reads them: one name per ordinal,
through the headless Service. The namespace comes from POD_NAMESPACE (declared
before it), so rendered manifests stay right when applied to another namespace.
*/}}
{{- define "django-ws.brokerAddresses" -}}
{{- printf "%s-{ordinal}.%s.$(POD_NAMESPACE).svc.%s:%d" (include "django-ws.broker.fullname" .) (include "django-ws.broker.headless" .) .Values.clusterDomain (int .Values.broker.grpcPort) }}
{{- end }}

{{/* Edge pods: the drain budget the kubelet allows before SIGKILL. */}}
{{- define "django-ws.edge.terminationGracePeriodSeconds" -}}
{{- add .Values.edge.drain.graceSeconds .Values.edge.drain.marginSeconds }}
{{- end }}

{{- define "django-ws.broker.terminationGracePeriodSeconds" -}}
{{- add .Values.broker.drainSeconds .Values.broker.graceSeconds .Values.broker.marginSeconds }}
{{- end }}

{{- define "django-ws.tls.secret" -}}
{{- required "tls.existingSecret is required when tls.enabled (a Secret with ca.crt, tls.crt, tls.key)" .Values.tls.existingSecret }}
{{- end }}

{{- define "django-ws.tls.clientSecret" -}}
{{- default (include "django-ws.tls.secret" .) .Values.tls.clientSecret }}
{{- end }}

{{/* The Secret holding the role secrets (keys edge, publisher, admin). */}}
{{- define "django-ws.auth.secret" -}}
{{- default (printf "%s-auth" (include "django-ws.broker.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/*
Environment that points a django-ws client (edge or publishing app pod) at the
brokers; django_ws_client reads it when the project's settings name no broker.
*/}}
{{- define "django-ws.brokerClientEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: DJANGO_WS_BROKERS
  value: {{ include "django-ws.brokerAddresses" . | quote }}
- name: DJANGO_WS_SHARDS
  value: {{ .Values.broker.replicas | quote }}
- name: DJANGO_WS_CONNECT_TIMEOUT
  value: {{ .Values.edge.brokerWaitSeconds | quote }}
{{- if .Values.tls.enabled }}
- name: DJANGO_WS_TLS_CA
  value: {{ printf "%s/ca.crt" .Values.tls.mountPath | quote }}
{{- if .Values.tls.mutual }}
- name: DJANGO_WS_TLS_CERT
  value: {{ printf "%s/tls.crt" .Values.tls.mountPath | quote }}
- name: DJANGO_WS_TLS_KEY
  value: {{ printf "%s/tls.key" .Values.tls.mountPath | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Values that would render valid YAML but a broken cluster. */}}
{{- define "django-ws.validate" -}}
{{- if lt (int .Values.broker.replicas) 1 }}
{{- fail "broker.replicas is the shard count and must be at least 1" }}
{{- end }}
{{- if lt (int .Values.edge.workers) 1 }}
{{- fail "edge.workers must be at least 1" }}
{{- end }}
{{- if lt (float64 .Values.edge.drain.marginSeconds) 3.0 }}
{{- fail "edge.drain.marginSeconds must be at least 3: an edge kills its workers 2 s after --grace, and the kubelet must not kill the edge first" }}
{{- end }}
{{- if not (has .Values.broker.antiAffinity (list "soft" "hard" "none")) }}
{{- fail "broker.antiAffinity must be soft, hard or none" }}
{{- end }}
{{- end }}
