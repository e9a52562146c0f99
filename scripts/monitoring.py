#!/usr/bin/env python3
"""The chart's monitoring objects in the form Prometheus itself reads, from the rendered chart
(`helm template ... | monitoring.py ...`), so what is tested is what the chart installs.

  monitoring.py rules
      the PrometheusRule's groups as a Prometheus rule file (scripts/check-alerts,
      scripts/cluster-test)
  monitoring.py scrape-config KUBECONFIG RULE_FILE
      a prometheus.yml that scrapes what the ServiceMonitor selects the way prometheus-operator
      configures it (endpoint slices of the Services matching its selector in its namespaces,
      the endpoint's port name, path and interval; labels job=<service>, namespace, service,
      pod), discovering through the API server of KUBECONFIG, with RULE_FILE loaded
      (scripts/cluster-test)
  monitoring.py dashboard-check DASHBOARD_JSON PROMETHEUS_URL START_EPOCH
      every query of every panel of the Grafana dashboard, its variables substituted as Grafana
      would ($job from its label_values query, $__range the time since START_EPOCH,
      $__rate_interval 1m), evaluated over [START_EPOCH, now] by that Prometheus: each must
      return a sample that is a number; prints the panels, exits 1 naming those without data
      (scripts/cluster-test)
"""

import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml


def objects(kind):
    return [d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") == kind]


def rules():
    groups = [g for rule in objects("PrometheusRule") for g in rule["spec"]["groups"]]
    if not groups:
        sys.exit("no PrometheusRule in the input (render with prometheusRule.enabled=true)")
    yaml.safe_dump({"groups": groups}, sys.stdout, sort_keys=False)


def label_name(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def scrape_config(kubeconfig, rule_file):
    monitors = objects("ServiceMonitor")
    if not monitors:
        sys.exit("no ServiceMonitor in the input (render with serviceMonitor.enabled=true)")
    jobs = []
    interval = "30s"
    for sm in monitors:
        spec, meta = sm["spec"], sm["metadata"]
        namespaces = spec.get("namespaceSelector", {}).get("matchNames") or [meta["namespace"]]
        keep = [
            {"action": "keep", "source_labels": ["__meta_kubernetes_service_label_" + label_name(k)],
             "regex": str(v)}
            for k, v in spec["selector"].get("matchLabels", {}).items()
        ]
        for i, ep in enumerate(spec["endpoints"]):
            interval = ep.get("interval", interval)
            jobs.append({
                "job_name": "serviceMonitor/%s/%s/%d" % (meta["namespace"], meta["name"], i),
                "scrape_interval": ep.get("interval", "30s"),
                "scrape_timeout": ep.get("scrapeTimeout", "10s"),
                "metrics_path": ep.get("path", "/metrics"),
                "kubernetes_sd_configs": [{
                    "role": "endpointslice",
                    "kubeconfig_file": kubeconfig,
                    "namespaces": {"names": namespaces},
                }],
                "relabel_configs": keep + [
                    {"action": "keep", "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
                     "regex": ep["port"]},
                    {"target_label": "namespace", "source_labels": ["__meta_kubernetes_namespace"]},
                    {"target_label": "service", "source_labels": ["__meta_kubernetes_service_name"]},
                    {"target_label": "pod", "source_labels": ["__meta_kubernetes_pod_name"]},
                    {"target_label": "job", "source_labels": ["__meta_kubernetes_service_name"]},
                ],
            })
    yaml.safe_dump({
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [rule_file],
        "scrape_configs": jobs,
    }, sys.stdout, sort_keys=False)


def prometheus_get(url, path, params):
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen("%s%s?%s" % (url, path, query), timeout=10) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError("%s: %s" % (path, body))
    return body["data"]


def dashboard_check(dashboard_file, url, start):
    dashboard = json.load(open(dashboard_file))
    now = time.time()
    start = float(start)
    values = {"__range": "%ds" % max(60, int(now - start)), "__rate_interval": "1m"}
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") != "query":
            continue
        text = query.get("query", "") if isinstance(query, dict) else query
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        if not m:
            sys.exit("variable %s: cannot evaluate %r" % (var.get("name"), text))
        found = prometheus_get(url, "/api/v1/label/%s/values" % m.group(2), {"match[]": m.group(1)})
        if not found:
            sys.exit("variable %s: %s has no values" % (var.get("name"), text))
        values[var["name"]] = "|".join(found)
    empty = []
    count = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), target["expr"])
            count += 1
            result = prometheus_get(url, "/api/v1/query_range",
                                    {"query": expr, "start": start, "end": now, "step": 15})["result"]
            numbers = [float(v) for series in result for _, v in series["values"]
                       if not math.isnan(float(v))]
            print("%-28s %4d series %5d samples  %s" % (panel["title"][:28], len(result), len(numbers), expr))
            if not numbers:
                empty.append("%s: %s" % (panel["title"], expr))
    if empty:
        sys.exit("dashboard panels without data:\n  " + "\n  ".join(empty))
    print("all %d queries of %d panels returned data" % (count, len(dashboard["panels"])))


def main(argv):
    if argv[1:2] == ["rules"]:
        rules()
    elif argv[1:2] == ["scrape-config"] and len(argv) == 4:
        scrape_config(argv[2], argv[3])
    elif argv[1:2] == ["dashboard-check"] and len(argv) == 5:
        dashboard_check(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
