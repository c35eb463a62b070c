{{/* Chart name. */}}
{{- define "dray-manager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "dray-manager.fullname" -}}
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

{{- define "dray-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dray-manager.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dray-manager.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dray-manager.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: manager
{{- end }}

{{- define "dray-manager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dray-manager.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "dray-manager.databaseSecret" -}}
{{- if .Values.database.postgres.url }}
{{- printf "%s-database" (include "dray-manager.fullname" .) }}
{{- else }}
{{- .Values.database.postgres.existingSecret }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the data directory is on a PersistentVolumeClaim. */}}
{{- define "dray-manager.persistent" -}}
{{- if and .Values.persistence.enabled (eq (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/* Names on the server certificate: the Service's, then advertiseHosts. */}}
{{- define "dray-manager.advertiseHosts" -}}
{{- $svc := include "dray-manager.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $hosts := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- join "," (concat $hosts .Values.advertiseHosts) }}
{{- end }}

{{/* Refuses combinations that would lose data or split the CA, naming the values
    (values.schema.json checks each value on its own). */}}
{{- define "dray-manager.validate" -}}
{{- if eq .Values.database.type "sqlite" }}
{{- if gt (int .Values.replicas) 1 }}
{{- fail (printf "replicas: %d needs database.type=postgres; SQLite is a file on one replica's volume" (int .Values.replicas)) }}
{{- end }}
{{- if not .Values.persistence.enabled }}
{{- fail "persistence.enabled: SQLite keeps everything in the data directory; without a volume a restart loses it (use database.type=postgres)" }}
{{- end }}
{{- else }}
{{- if and (not .Values.database.postgres.url) (not .Values.database.postgres.existingSecret) }}
{{- fail "database.postgres: set database.postgres.existingSecret (a Secret with the URL) or database.postgres.url" }}
{{- end }}
{{- if and .Values.database.postgres.url (not (hasPrefix "postgres" .Values.database.postgres.url)) }}
{{- fail "database.postgres.url: must be a postgres:// or postgresql:// URL" }}
{{- end }}
{{- end }}
{{- if and (not (include "dray-manager.persistent" .)) (not .Values.pki.existingSecret) }}
{{- fail "pki.existingSecret: without a persistent data directory (replicas > 1 or persistence.enabled=false) each manager would create its own CA and admin token; create a Secret with ca.pem, ca.key and admin.token (see deploy/README.md)" }}
{{- end }}
{{- if and (gt (int .Values.replicas) 1) .Values.persistence.existingClaim }}
{{- fail "persistence.existingClaim: replicas > 1 keep no data directory on a volume; share the CA with pki.existingSecret" }}
{{- end }}
{{- end }}
