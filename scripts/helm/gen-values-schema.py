"""Writes deploy/helm/postmesh/values.schema.json (helm validates values against it).

Generated so the per-component and pod-level parts stay the same everywhere; edit this file, run
`uv run python scripts/helm/gen-values-schema.py`, and commit both (tests/helm checks they match).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "deploy/helm/postmesh/values.schema.json"


def obj(props: dict[str, Any], required: Any = (), addl: bool = False, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": addl}
    if required:
        d["required"] = list(required)
    d.update(kw)
    return d


S = {"type": "string"}
B = {"type": "boolean"}
ANYOBJ = {"type": "object"}
ARR = {"type": "array"}
port = {"type": "integer", "minimum": 1, "maximum": 65535}
# An existing Secret's name and key (the chart mounts that key as a file).
secret_ref = obj({"name": S, "key": {"type": "string", "minLength": 1}}, required=["name", "key"])
strmap = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
envmap = {
    "type": "object",
    "description": "Extra POSTMESH_* variables.",
    "propertyNames": {"pattern": "^POSTMESH_[A-Z0-9_]+$"},
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
# POSTMESH_PROXY_TRUSTED_NETWORKS items: an IPv4/IPv6 address or CIDR (checked again by the service).
cidrs = {"type": "array", "items": {"type": "string", "pattern": r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"}}
quantity = {"type": ["string", "number"], "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"}
resources = obj(
    {
        "requests": {"type": "object", "additionalProperties": quantity},
        "limits": {"type": "object", "additionalProperties": quantity},
    },
    addl=False,
)
probe = obj(
    {
        k: {"type": "integer", "minimum": 0 if k == "initialDelaySeconds" else 1}
        for k in (
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "successThreshold",
        )
    }
)
image = obj(
    {"repository": S, "tag": S, "digest": {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"}}
)
autoscaling = obj(
    {
        "enabled": B,
        "minReplicas": {"type": "integer", "minimum": 1},
        "maxReplicas": {"type": "integer", "minimum": 1},
        "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
        # Edges only (hpa.yaml refuses it elsewhere): open sessions per pod, through the
        # Prometheus adapter.
        "activeSessions": obj(
            {"enabled": B, "averageValue": {"type": "integer", "minimum": 1}},
            required=["enabled", "averageValue"],
        ),
    },
    required=["enabled", "minReplicas", "maxReplicas", "targetCPUUtilizationPercentage"],
)
intOrPercent = {
    "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+%$"}]
}
pdb = obj(
    {"enabled": B, "maxUnavailable": intOrPercent, "minAvailable": intOrPercent},
    required=["enabled"],
)
# A PodDisruptionBudget takes one of the two, never both.
pdb["not"] = {"required": ["maxUnavailable", "minAvailable"]}
pod_keys = {
    "podSecurityContext": ANYOBJ,
    "securityContext": ANYOBJ,
    "podAnnotations": strmap,
    "podLabels": strmap,
    "nodeSelector": {"type": "object", "additionalProperties": S},
    "tolerations": ARR,
    "affinity": ANYOBJ,
    "topologySpreadConstraints": ARR,
    "priorityClassName": S,
    "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
    "preStopSleepSeconds": {"type": "integer", "minimum": 0},
    "scratchSizeLimit": quantity,
    "livenessProbe": probe,
    "readinessProbe": probe,
}


def lb_service(ports: list[str]) -> dict[str, Any]:
    return obj(
        {
            "type": {"enum": ["LoadBalancer", "NodePort", "ClusterIP"]},
            "annotations": strmap,
            "externalTrafficPolicy": {"enum": ["Local", "Cluster", ""]},
            "loadBalancerClass": S,
            "loadBalancerSourceRanges": {"type": "array", "items": S},
            "ports": obj({p: port for p in ports}, required=ports),
        },
        required=["type", "ports"],
    )


def internal_service(ports: list[str]) -> dict[str, Any]:
    return obj(
        {
            "type": {"const": "ClusterIP"},
            "annotations": strmap,
            "ports": obj({p: port for p in ports}, required=ports),
        },
        required=["type", "ports"],
    )


def component(extra: dict[str, Any], required_extra: Any = ()) -> dict[str, Any]:
    props = {
        "replicas": {"type": "integer", "minimum": 0},
        "image": image,
        "resources": resources,
        "env": envmap,
        "autoscaling": autoscaling,
        "pdb": pdb,
        **pod_keys,
        **extra,
    }
    return obj(props, required=["replicas", "autoscaling", "pdb", *required_extra])


backend = {
    "enum": ["mongodb"],
    "description": "Only mongodb in Kubernetes: the embedded SQLite backends need one shared disk.",
}
schema: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Postmesh chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": ANYOBJ,
        "nameOverride": S,
        "fullnameOverride": S,
        "commonLabels": {"type": "object", "additionalProperties": S},
        "image": obj(
            {
                "repository": {"type": "string", "minLength": 1},
                "tag": S,
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            },
            required=["repository"],
        ),
        "imagePullSecrets": {
            "type": "array",
            "items": obj({"name": {"type": "string", "minLength": 1}}, required=["name"]),
        },
        "serviceAccount": obj({"create": B, "name": S, "annotations": strmap}),
        "config": obj(
            {
                "logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
                "hostname": {
                    "type": "string",
                    "pattern": r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
                },
                "bus": {
                    "enum": ["kafka"],
                    "description": "Only kafka in Kubernetes: the embedded SQLite bus needs one shared disk.",
                },
                "grpcDeadlineSeconds": {"type": "number", "exclusiveMinimum": 0},
                "env": envmap,
            },
            required=["hostname", "bus"],
        ),
        "tls": obj(
            {
                "existingSecret": S,
                "cert": S,
                "key": S,
                "certManager": obj(
                    {
                        "enabled": B,
                        "issuerRef": obj({"name": S, "kind": S, "group": S}),
                        "dnsNames": {"type": "array", "items": S},
                        "duration": S,
                        "renewBefore": S,
                    }
                ),
            }
        ),
        "grpcTls": obj(
            {
                "mode": {"enum": ["generate", "certManager", "existingSecrets", "plaintext"]},
                "certManager": obj(
                    {
                        "issuerRef": obj({"name": S, "kind": S, "group": S}),
                        "duration": S,
                        "renewBefore": S,
                    }
                ),
            },
            ["mode"],
        ),
        "mongodb": obj(
            {
                "url": {"type": "string", "pattern": "^(mongodb(\\+srv)?://.+)?$"},
                "existingSecret": S,
                "existingSecretKey": {"type": "string", "minLength": 1},
                "database": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,63}$"},
                "community": obj(
                    {
                        "enabled": B,
                        "members": {"type": "integer", "minimum": 1},
                        "version": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$"},
                        "username": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"},
                        "storage": obj(
                            {"dataSize": quantity, "logsSize": quantity, "storageClassName": S}
                        ),
                    },
                    required=["enabled"],
                ),
                "tls": obj(
                    {"caSecret": secret_ref, "clientCertKeySecret": secret_ref},
                    required=["caSecret", "clientCertKeySecret"],
                ),
            },
            required=["database", "community", "tls"],
        ),
        "kafka": obj(
            {
                "bootstrapServers": {
                    "type": "string",
                    "pattern": r"^([^,\s]+:[0-9]+)(,[^,\s]+:[0-9]+)*$",
                },
                "topicPrefix": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{0,100}$"},
                "securityProtocol": {"enum": ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]},
                "sasl": obj(
                    {
                        "mechanism": {"enum": ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]},
                        "username": S,
                        "passwordSecret": secret_ref,
                    },
                    required=["mechanism", "passwordSecret"],
                ),
                "tls": obj({"caSecret": secret_ref, "clientCertSecret": S}, required=["caSecret"]),
                "strimzi": obj(
                    {
                        "enabled": B,
                        "apiVersion": {"enum": ["kafka.strimzi.io/v1", "kafka.strimzi.io/v1beta2"]},
                        "version": {"type": "string", "pattern": r"^[0-9]+\.[0-9]+\.[0-9]+$"},
                        "replicas": {"type": "integer", "minimum": 1},
                        "storage": obj({"size": quantity, "storageClassName": S}),
                        "kafkaExporter": B,
                        "authentication": {"enum": ["none", "scram-sha-512"]},
                    },
                    required=["enabled"],
                ),
                "topics": obj(
                    {
                        "create": B,
                        "clusterName": S,
                        "partitions": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 1},
                        "minInsyncReplicas": {"type": "integer", "minimum": 1},
                        "retentionMs": {"type": "integer", "minimum": -1},
                    }
                ),
            },
            required=["securityProtocol", "sasl", "tls", "strimzi", "topics"],
        ),
        "podDefaults": obj(pod_keys),
        "smtpEdge": component(
            {
                "proxyProtocol": B,
                "proxyTrustedNetworks": cidrs,
                "service": lb_service(["smtp", "submission", "submissions"]),
            },
            ["service"],
        ),
        "imapGw": component(
            {
                "proxyProtocol": B,
                "proxyTrustedNetworks": cidrs,
                "service": lb_service(["imap", "imaps"]),
            },
            ["service"],
        ),
        "pop3Gw": component(
            {
                "proxyProtocol": B,
                "proxyTrustedNetworks": cidrs,
                "service": lb_service(["pop3", "pop3s"]),
            },
            ["service"],
        ),
        "delivery": component(
            {
                "consumerGroup": {"type": "string", "minLength": 1},
                "keda": obj(
                    {
                        "enabled": B,
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 1},
                        "lagThreshold": {"type": "integer", "minimum": 1},
                        "topic": S,
                        "pollingIntervalSeconds": {"type": "integer", "minimum": 1},
                        "cooldownPeriodSeconds": {"type": "integer", "minimum": 0},
                    },
                    required=["enabled"],
                ),
                "dkim": obj(
                    {
                        "existingSecret": S,
                        "keys": {
                            "type": "object",
                            "propertyNames": {"pattern": r"^[-._a-zA-Z0-9]+$"},
                            "additionalProperties": {
                                "type": "string",
                                "pattern": "-----BEGIN [A-Z ]*PRIVATE KEY-----",
                            },
                        },
                    }
                ),
            }
        ),
        "store": component(
            {"backend": backend, "service": internal_service(["grpc"])}, ["service", "backend"]
        ),
        "auth": component(
            {
                "backend": backend,
                "postmaster": {
                    "type": "string",
                    "description": "POSTMESH_AUTH_POSTMASTER: who gets mail for postmaster@ "
                    "every hosted domain without a postmaster address of its own, and for "
                    "<Postmaster> (RFC 5321 §4.5.1). Empty: create one per domain.",
                },
                "service": internal_service(["grpc", "admin"]),
                "adminToken": obj(
                    {
                        "existingSecret": S,
                        "existingSecretKey": S,
                        "value": {
                            "type": "string",
                            "anyOf": [{"maxLength": 0}, {"minLength": 16}],
                            "description": "At least 16 characters (POSTMESH_ADMIN_TOKEN).",
                        },
                    }
                ),
            },
            ["service", "backend", "adminToken"],
        ),
        "serviceMonitor": obj(
            {
                "enabled": B,
                "labels": strmap,
                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
            }
        ),
        "prometheusRule": obj(
            {
                "enabled": B,
                "labels": strmap,
                "alertLabels": strmap,
                "consumerLagExpr": S,
                "thresholds": obj(
                    {
                        "bounceRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "consumerLag": {"type": "integer", "minimum": 1},
                        "grpcErrorRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "deliveryLatencyP95Seconds": {"type": "number", "exclusiveMinimum": 0},
                        "deferredQueueGrowthPerHour": {"type": "integer", "minimum": 1},
                        "authFailuresPerSecond": {"type": "number", "exclusiveMinimum": 0},
                        "tlsCertificateExpiryDays": {"type": "integer", "minimum": 1},
                    }
                ),
            }
        ),
        "dashboards": obj({"enabled": B, "labels": strmap, "annotations": strmap, "namespace": S}),
        "networkPolicy": obj({"enabled": B, "monitoringFrom": ARR, "adminFrom": ARR}),
    },
    "required": [
        "image",
        "config",
        "mongodb",
        "kafka",
        "smtpEdge",
        "imapGw",
        "pop3Gw",
        "delivery",
        "store",
        "auth",
    ],
}


def main() -> None:
    OUT.write_text(json.dumps(schema, indent=2) + "\n")


if __name__ == "__main__":
    main()
