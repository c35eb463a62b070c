{{/* Chart name. */}}
{{- define "dray-delegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "dray-delegate.fullname" -}}
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

{{- define "dray-delegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dray-delegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dray-delegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dray-delegate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: delegate
{{- end }}

{{- define "dray-delegate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dray-delegate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dray-delegate.tokenSecret" -}}
{{- if .Values.token.value }}
{{- printf "%s-token" (include "dray-delegate.fullname" .) }}
{{- else }}
{{- .Values.token.existingSecret }}
{{- end }}
{{- end }}

{{- define "dray-delegate.caConfigMap" -}}
{{- if .Values.manager.ca.pem }}
{{- printf "%s-ca" (include "dray-delegate.fullname" .) }}
{{- else }}
{{- .Values.manager.ca.existingConfigMap }}
{{- end }}
{{- end }}

{{/* Refuses combinations that would break the delegate, naming the values
    (values.schema.json checks each value on its own). */}}
{{- define "dray-delegate.validate" -}}
{{- if and (eq .Values.kind "Deployment") .Values.persistence.enabled (gt (int .Values.replicas) 1) }}
{{- fail (printf "replicas: %d with kind=Deployment and persistence.enabled would share one identity between pods; set kind=StatefulSet (one volume and identity per pod) or persistence.enabled=false (each pod enrols anew on start)" (int .Values.replicas)) }}
{{- end }}
{{- if and (eq .Values.kind "StatefulSet") (not .Values.persistence.enabled) }}
{{- fail "persistence.enabled: a StatefulSet keeps each pod's identity on its own volume; use kind=Deployment for ephemeral identities" }}
{{- end }}
{{- if and (eq .Values.kind "StatefulSet") .Values.persistence.existingClaim }}
{{- fail "persistence.existingClaim: a StatefulSet creates one claim per pod; existingClaim is for kind=Deployment with one replica" }}
{{- end }}
{{- if and (not .Values.manager.ca.pem) (not .Values.manager.ca.existingConfigMap) }}
{{- fail "manager.ca: set manager.ca.pem (the manager's ca.pem) or manager.ca.existingConfigMap" }}
{{- end }}
{{- if and .Values.manager.ca.pem (not (contains "-----BEGIN CERTIFICATE-----" .Values.manager.ca.pem)) }}
{{- fail "manager.ca.pem: holds no PEM certificate (expected the manager's ca.pem)" }}
{{- end }}
{{- if and (not .Values.token.value) (not .Values.token.existingSecret) }}
{{- fail "token: set token.value or token.existingSecret (a Secret with the enrolment token)" }}
{{- end }}
{{- end }}

{{/* Rules for Kubernetes deploys: the workloads and what they use. */}}
{{- define "dray-delegate.rules" -}}
{{- if .Values.rbac.rules }}
{{- toYaml .Values.rbac.rules }}
{{- else }}
- apiGroups: [""]
  resources: [configmaps, secrets, services, serviceaccounts, persistentvolumeclaims, pods, endpoints]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [pods/log, events]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets, replicasets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale]
  verbs: [get, update, patch]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
{{- end }}
{{- end }}
