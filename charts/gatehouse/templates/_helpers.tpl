{{/* Names and labels. */}}
{{- define "gatehouse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: gatehouse
{{ include "gatehouse.selectorLabels" . }}
{{- end -}}

{{/* Secrets: the chart's own unless existing ones are named. */}}
{{- define "gatehouse.secretsName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "gatehouse.fullname" .)) -}}
{{- end -}}

{{/* The agent/operator certificate: the named Secret, else the chart's
     own (generated, or issued by cert-manager; templates/tls.yaml). */}}
{{- define "gatehouse.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "gatehouse.fullname" .)) -}}
{{- end -}}

{{- define "gatehouse.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" .Release.Name -}}
{{- else -}}
{{- .Values.nats.url -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.scyllaContactPoints" -}}
{{- if .Values.scylla.enabled -}}
{{- list (printf "%s-scylla:9042" .Release.Name) | toJson -}}
{{- else -}}
{{- .Values.scylla.contactPoints | toJson -}}
{{- end -}}
{{- end -}}

{{/*
One role's Deployment. Arguments (a dict):
  root   the chart context
  role   edge | hostd | ingest | api
  v      the role's values
  ports  list of {name, port} the role listens on besides ops
  tls    mount the agent/operator TLS certificate
*/}}
{{- define "gatehouse.deployment" -}}
{{- $root := .root -}}
{{- $v := .v -}}
{{- $ctx := dict "root" $root "role" .role -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "gatehouse.fullname" $root }}-{{ .role }}
  labels:
    {{- include "gatehouse.labels" $ctx | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "gatehouse.selectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # One at a time: a hostd hands its shards over before the next stops.
      maxUnavailable: {{ if eq .role "hostd" }}1{{ else }}0{{ end }}
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "gatehouse.labels" $ctx | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Configuration or secret changes roll the pods.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        checksum/secrets: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "gatehouse.selectorLabels" $ctx | nindent 14 }}
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "gatehouse.selectorLabels" $ctx | nindent 14 }}
      {{- end }}
      {{- if ne $root.Values.podAntiAffinity "none" }}
      affinity:
        podAntiAffinity:
          {{- if eq $root.Values.podAntiAffinity "hard" }}
          requiredDuringSchedulingIgnoredDuringExecution:
            - topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  {{- include "gatehouse.selectorLabels" $ctx | nindent 18 }}
          {{- else }}
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "gatehouse.selectorLabels" $ctx | nindent 20 }}
          {{- end }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .role }}
          image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .role | quote }}, "--config", "/etc/gatehouse/gatehouse.toml"]
          env:
            - name: RUST_LOG
              value: {{ $root.Values.logLevel | quote }}
            {{- if $root.Values.scylla.auth.existingSecret }}
            - name: GATEHOUSE_SCYLLA_USERNAME
              valueFrom:
                secretKeyRef: {name: {{ $root.Values.scylla.auth.existingSecret }}, key: username}
            - name: GATEHOUSE_SCYLLA_PASSWORD
              valueFrom:
                secretKeyRef: {name: {{ $root.Values.scylla.auth.existingSecret }}, key: password}
            {{- end }}
            {{- if $root.Values.nats.auth.existingSecret }}
            - name: GATEHOUSE_NATS_USERNAME
              valueFrom:
                secretKeyRef: {name: {{ $root.Values.nats.auth.existingSecret }}, key: username}
            - name: GATEHOUSE_NATS_PASSWORD
              valueFrom:
                secretKeyRef: {name: {{ $root.Values.nats.auth.existingSecret }}, key: password}
            {{- end }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
            - name: ops
              containerPort: 8445
              protocol: TCP
          # Separate probes: /livez (the process runs), /readyz (it serves;
          # false while draining), a startup probe for the first connect to
          # NATS and ScyllaDB (schema migrations on a new keyspace).
          startupProbe:
            httpGet: {path: /livez, port: ops}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet: {path: /livez, port: ops}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            httpGet: {path: /readyz, port: ops}
            periodSeconds: 5
            failureThreshold: 2
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - {name: config, mountPath: /etc/gatehouse/gatehouse.toml, subPath: gatehouse.toml, readOnly: true}
            - {name: data, mountPath: /var/lib/gatehouse}
            - {name: secrets, mountPath: /var/lib/gatehouse/secrets, readOnly: true}
            - {name: tmp, mountPath: /tmp}
            {{- if .tls }}
            - {name: tls, mountPath: /etc/gatehouse/tls, readOnly: true}
            {{- if $root.Values.tls.clientCA.existingSecret }}
            - {name: client-ca, mountPath: /etc/gatehouse/client-ca, readOnly: true}
            {{- end }}
            {{- end }}
            {{- if $root.Values.scylla.tls.existingSecret }}
            - {name: scylla-ca, mountPath: /etc/gatehouse/scylla-ca, readOnly: true}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "gatehouse.fullname" $root }}-config
        - name: data
          emptyDir: {sizeLimit: 64Mi}
        - name: tmp
          emptyDir: {sizeLimit: 64Mi}
        # Secret files are readable by the pod's group (fsGroup), not the
        # world: the process runs as that group's non-root user.
        - name: secrets
          secret:
            secretName: {{ include "gatehouse.secretsName" $root }}
            defaultMode: 0440
            items:
              - {key: enroll_secret, path: enroll_secret}
              - {key: admin_token, path: admin_token}
              - {key: node_key_secret, path: node_key_secret}
        {{- if .tls }}
        - name: tls
          secret:
            secretName: {{ include "gatehouse.tlsSecretName" $root }}
            defaultMode: 0440
        {{- if $root.Values.tls.clientCA.existingSecret }}
        - name: client-ca
          secret:
            secretName: {{ $root.Values.tls.clientCA.existingSecret }}
            items:
              - {key: {{ $root.Values.tls.clientCA.key }}, path: ca.pem}
        {{- end }}
        {{- end }}
        {{- if $root.Values.scylla.tls.existingSecret }}
        - name: scylla-ca
          secret:
            secretName: {{ $root.Values.scylla.tls.existingSecret }}
            items:
              - {key: {{ $root.Values.scylla.tls.key }}, path: ca.pem}
        {{- end }}
{{- end -}}

{{/* A role's HorizontalPodAutoscaler (dict: root, role, v, metrics). */}}
{{- define "gatehouse.hpa" -}}
{{- $ctx := dict "root" .root "role" .role -}}
{{- if .v.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "gatehouse.fullname" .root }}-{{ .role }}
  labels:
    {{- include "gatehouse.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "gatehouse.fullname" .root }}-{{ .role }}
  minReplicas: {{ .v.autoscaling.minReplicas }}
  maxReplicas: {{ .v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .v.autoscaling.targetCPUUtilizationPercentage }}
    {{- with .metrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  behavior:
    scaleDown:
      # Scale in slowly: each removed hostd hands its shards over.
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 120
{{- end }}
{{- end -}}

{{/* A role's PodDisruptionBudget (dict: root, role, v). */}}
{{- define "gatehouse.pdb" -}}
{{- $ctx := dict "root" .root "role" .role -}}
{{- if .v.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "gatehouse.fullname" .root }}-{{ .role }}
  labels:
    {{- include "gatehouse.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: {{ .v.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "gatehouse.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end -}}
