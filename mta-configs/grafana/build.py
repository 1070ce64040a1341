"""Build mta-configs/grafana/smtp-balancer.json with Grafana's own SDK (grafana-foundation-sdk).

    .venv/bin/python mta-configs/grafana/build.py > mta-configs/grafana/smtp-balancer.json

`tests/test_dashboard.py` fails when the committed JSON differs from this, and
`integration/test_prometheus.py` evaluates every panel's expression against a
real Prometheus scraping the real daemons.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.statetimeline import Panel as StateTimeline
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RI = "$__rate_interval"
# every feedback daemon exports the same fleet-wide complaint totals: max, not sum
COMPLAINTS_1D = "max without (instance, job) (increase(smtp_balancer_complaints_total[1d]))"
SENT_1D = 'increase(smtp_balancer_deliveries_total{status="sent"}[1d])'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: str  # timeseries | stat | table | state
    queries: tuple[Query, ...]
    unit: str = ""
    description: str = ""


ROWS: list[tuple[str, list[PanelSpec]]] = [
    (
        "Decisions",
        [
            PanelSpec(
                "Decisions per endpoint",
                "timeseries",
                (
                    Query(
                        f'sum by (endpoint) (rate(smtp_balancer_decisions_total{{outcome="route"}}[{RI}]))',
                        "{{endpoint}}",
                    ),
                ),
                "ops",
            ),
            PanelSpec(
                "Decisions per pool and outcome",
                "timeseries",
                (
                    Query(
                        f"sum by (pool, outcome) (rate(smtp_balancer_decisions_total[{RI}]))",
                        "{{pool}} {{outcome}}",
                    ),
                ),
                "ops",
                "outcome route: a FILTER; default: the MTA's default transport; defer: try later",
            ),
            PanelSpec(
                "Degraded decisions (made without Redis)",
                "timeseries",
                (
                    Query(
                        f"sum by (reason) (rate(smtp_balancer_degraded_decisions_total[{RI}]))", "{{reason}}"
                    ),
                ),
                "ops",
            ),
            PanelSpec(
                "Decision latency",
                "timeseries",
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(smtp_balancer_decision_duration_seconds_bucket[{RI}])))",
                        "p50",
                    ),
                    Query(
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(smtp_balancer_decision_duration_seconds_bucket[{RI}])))",
                        "p99",
                    ),
                ),
                "s",
            ),
        ],
    ),
    (
        "Capacity and health",
        [
            PanelSpec(
                "Warm-up: sent today against the daily cap",
                "timeseries",
                (
                    Query("smtp_balancer_warmup_sent_today", "{{endpoint}} sent"),
                    Query("smtp_balancer_warmup_daily_cap", "{{endpoint}} cap"),
                ),
            ),
            PanelSpec(
                "Eligible endpoints per pool",
                "stat",
                (Query("max by (pool) (smtp_balancer_pool_eligible_endpoints)", "{{pool}}"),),
            ),
            PanelSpec(
                "Endpoint states (1 = current)",
                "state",
                (Query("max by (endpoint, state) (smtp_balancer_endpoint_state)", "{{endpoint}} {{state}}"),),
                description="drained is manual; quarantined comes from DNSBL, relay probes or a "
                "response rule. The reason is in `smtp-balancer status`.",
            ),
            PanelSpec(
                "Active suspensions",
                "table",
                (
                    Query(
                        "max by (endpoint, provider) (smtp_balancer_endpoint_suspended)",
                        "{{endpoint}} {{provider}}",
                    ),
                ),
                description="The reason (rule and reply) is in `smtp-balancer status`.",
            ),
            PanelSpec(
                "Suspensions, quarantines and throttles applied, by rule",
                "table",
                (
                    Query(
                        "sum by (rule, endpoint, provider, action) "
                        "(increase(smtp_balancer_feedback_actions_total[$__range]))",
                    ),
                ),
            ),
        ],
    ),
    (
        "Deliveries",
        [
            PanelSpec(
                "Delivery outcomes",
                "timeseries",
                (
                    Query(
                        f"sum by (endpoint, provider, status) (rate(smtp_balancer_deliveries_total[{RI}]))",
                        "{{endpoint}} {{provider}} {{status}}",
                    ),
                ),
                "ops",
            ),
            PanelSpec(
                "Deferral rate",
                "timeseries",
                (
                    Query(
                        "sum by (endpoint, provider) (rate(smtp_balancer_deliveries_total"
                        f'{{status="deferred"}}[{RI}])) / sum by (endpoint, provider) '
                        f"(rate(smtp_balancer_deliveries_total[{RI}]))",
                        "{{endpoint}} {{provider}}",
                    ),
                ),
                "percentunit",
            ),
            PanelSpec(
                "Bounce rate",
                "timeseries",
                (
                    Query(
                        "sum by (endpoint, provider) (rate(smtp_balancer_deliveries_total"
                        f'{{status=~"bounced|expired"}}[{RI}])) / sum by (endpoint, provider) '
                        f"(rate(smtp_balancer_deliveries_total[{RI}]))",
                        "{{endpoint}} {{provider}}",
                    ),
                ),
                "percentunit",
            ),
            PanelSpec(
                "Bounce rate by class",
                "timeseries",
                (
                    Query(
                        "sum by (endpoint, provider, class) (rate(smtp_balancer_deliveries_total"
                        f'{{status=~"bounced|expired"}}[{RI}])) / ignoring (class) group_left '
                        f"sum by (endpoint, provider) (rate(smtp_balancer_deliveries_total[{RI}]))",
                        "{{endpoint}} {{provider}} {{class}}",
                    ),
                ),
                "percentunit",
                "invalid_recipient: a list problem; policy_block or spam_content: reputation or content",
            ),
            PanelSpec(
                "Delivery latency p90 (arrival to delivery)",
                "timeseries",
                (
                    Query(
                        "histogram_quantile(0.9, sum by (le, endpoint) "
                        f"(rate(smtp_balancer_delivery_delay_seconds_bucket[{RI}])))",
                        "{{endpoint}}",
                    ),
                ),
                "s",
            ),
        ],
    ),
    (
        "Reputation and relays",
        [
            PanelSpec(
                "DNSBL listings (1 = listed)",
                "state",
                (Query("max by (endpoint, zone) (smtp_balancer_dnsbl_listed)", "{{endpoint}} {{zone}}"),),
            ),
            PanelSpec(
                "Relay health (1 = up)",
                "state",
                (Query("max by (endpoint) (smtp_balancer_relay_up)", "{{endpoint}}"),),
            ),
            PanelSpec(
                "Adaptive weight factors (1 = full weight)",
                "timeseries",
                (
                    Query(
                        "min by (endpoint, provider) (smtp_balancer_adaptive_factor)",
                        "{{endpoint}} {{provider}}",
                    ),
                ),
                "short",
                "Pools with adaptive: true: the share of its weight an endpoint keeps for a provider",
            ),
        ],
    ),
    (
        "Experiments",
        [
            PanelSpec(
                "Decisions per experiment arm",
                "timeseries",
                (
                    Query(
                        f"sum by (experiment, arm) (rate(smtp_balancer_experiment_decisions_total[{RI}]))",
                        "{{experiment}} {{arm}}",
                    ),
                ),
                "ops",
                "smtp-balancer experiment report NAME gives the intervals and the verdict",
            ),
            PanelSpec(
                "Deferral rate per experiment arm",
                "timeseries",
                (
                    Query(
                        "sum by (experiment, arm) "
                        f'(rate(smtp_balancer_experiment_outcomes_total{{status="deferred"}}[{RI}])) '
                        "/ on (experiment, arm) sum by (experiment, arm) "
                        f"(rate(smtp_balancer_experiment_outcomes_total[{RI}]))",
                        "{{experiment}} {{arm}}",
                    ),
                ),
                "percentunit",
                "Deferrals per delivery attempt of the messages in each arm, from the MTA log",
            ),
            PanelSpec(
                "Complaint rate per experiment arm, last 24 h",
                "timeseries",
                (
                    Query(
                        "max without (instance, job) "
                        "(increase(smtp_balancer_experiment_complaints_total[1d])) "
                        "/ on (experiment, arm) sum by (experiment, arm) "
                        '(increase(smtp_balancer_experiment_outcomes_total{status="sent"}[1d]))',
                        "{{experiment}} {{arm}}",
                    ),
                ),
                "percentunit",
                "Complaints (smtp-balancer fbl, by our Received header's queue id) per delivered message",
            ),
        ],
    ),
    (
        "Reputation",
        [
            PanelSpec(
                "Reputation (3 HIGH/GREEN, 2 MEDIUM/YELLOW, 1 LOW/RED, 0 BAD/blocked)",
                "timeseries",
                (
                    Query(
                        "min without (instance, job) (smtp_balancer_reputation)",
                        "{{endpoint}} {{provider}} {{source}}",
                    ),
                ),
                "short",
                "Postmaster Tools and SNDS, as `smtp-balancer reputation import` last recorded them",
            ),
            PanelSpec(
                "User-reported spam rate per tenant (Postmaster Tools; Gmail's ceiling: 0.3%)",
                "timeseries",
                (
                    Query(
                        "max without (instance, job) (smtp_balancer_tenant_reported_spam_rate)",
                        "{{tenant}} {{provider}}",
                    ),
                ),
                "percentunit",
                "The newest day Postmaster Tools reported for the tenant's domain (`reputation import`)",
            ),
        ],
    ),
    (
        "Complaints and tenants",
        [
            PanelSpec(
                "Complaint rate, last 24 h (Gmail's ceiling: 0.3%)",
                "timeseries",
                (
                    Query(
                        f"sum by (endpoint, provider) ({COMPLAINTS_1D}) / on (endpoint, provider) "
                        f"sum by (endpoint, provider) ({SENT_1D})",
                        "{{endpoint}} {{provider}}",
                    ),
                ),
                "percentunit",
                "Complaints (smtp-balancer fbl) per message delivered, per endpoint and provider",
            ),
            PanelSpec(
                "Spam complaint rate per tenant, last 24 h (Gmail's ceiling: 0.3%)",
                "timeseries",
                (Query("max without (instance, job) (smtp_balancer_tenant_spam_rate)", "{{tenant}}"),),
                "percentunit",
                "Complaints per message the tenant delivered (tenants: in the YAML)",
            ),
            PanelSpec(
                "Complaints per tenant, last 24 h",
                "timeseries",
                (Query(f"sum by (tenant) ({COMPLAINTS_1D})", "{{tenant}}"),),
                "short",
            ),
            PanelSpec(
                "Deliveries per tenant",
                "timeseries",
                (
                    Query(
                        f"sum by (tenant, status) (rate(smtp_balancer_deliveries_total[{RI}]))",
                        "{{tenant}} {{status}}",
                    ),
                ),
                "ops",
                "Tenants are the configured sender domains; every other sender is other",
            ),
            PanelSpec(
                "Feedback reports by result",
                "timeseries",
                (
                    Query(
                        "max by (result) (increase(smtp_balancer_fbl_reports_total[$__range]))",
                        "{{result}}",
                    ),
                ),
                "short",
                "Anything but complaint and not_counted is kept in feedback.complaints.keep_dir",
            ),
        ],
    ),
    (
        "Moving queued mail",
        [
            PanelSpec(
                "Deferred messages bound to each endpoint",
                "timeseries",
                (Query("sum by (endpoint) (smtp_balancer_requeue_queued_messages)", "{{endpoint}}"),),
                "short",
                "From each host's requeue daemon, at its last sweep",
            ),
            PanelSpec(
                "Queued messages moved, by old and new endpoint",
                "timeseries",
                (
                    Query(
                        "sum by (from_endpoint, to_endpoint, reason) "
                        f"(increase(smtp_balancer_requeue_moved_total[{RI}]))",
                        "{{from_endpoint}} -> {{to_endpoint}} ({{reason}})",
                    ),
                ),
                "short",
            ),
            PanelSpec(
                "Delivery-time table lookups",
                "timeseries",
                (Query(f"sum by (answer) (rate(smtp_balancer_table_lookups_total[{RI}]))", "{{answer}}"),),
                "ops",
                "temp: Redis unusable, Postfix retries later; moved: a pinned route decided again",
            ),
        ],
    ),
    (
        "Daemons",
        [
            PanelSpec("Daemons up", "stat", (Query('up{job=~"smtp-balancer.*"}', "{{job}} {{instance}}"),)),
            PanelSpec(
                "Policy daemon connections",
                "timeseries",
                (Query("sum(smtp_balancer_policy_connections)", "open"),),
            ),
            PanelSpec(
                "Milter classifications",
                "timeseries",
                (
                    Query(
                        f"sum by (message_class) (rate(smtp_balancer_milter_classified_total[{RI}]))",
                        "{{message_class}}",
                    ),
                ),
                "ops",
            ),
            PanelSpec(
                "Log lines read by the feedback daemon",
                "timeseries",
                (Query(f"sum by (kind) (rate(smtp_balancer_feedback_log_lines_total[{RI}]))", "{{kind}}"),),
                "ops",
            ),
        ],
    ),
]

BUILDERS = {"timeseries": Timeseries, "stat": Stat, "table": Table, "state": StateTimeline}


def panel(spec: PanelSpec):
    p = BUILDERS[spec.kind]().title(spec.title).datasource(DS)
    if spec.unit:
        p = p.unit(spec.unit)
    if spec.description:
        p = p.description(spec.description)
    for i, q in enumerate(spec.queries):
        target = Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DS)
        if q.legend:
            target = target.legend_format(q.legend)
        if spec.kind == "table":
            target = target.instant().format(PromQueryFormat.TABLE)
        p = p.with_target(target)
    return p.height(8).span(12 if spec.kind != "stat" else 6)


def build() -> Dashboard:
    d = (
        Dashboard("smtp-balancer")
        .uid("smtp-balancer")
        .tags(["smtp-balancer", "mail"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for title, specs in ROWS:
        d = d.with_row(Row(title))
        for spec in specs:
            d = d.with_panel(panel(spec))
    return d


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def expressions() -> list[tuple[str, str]]:
    """(panel title, expr) for every query: what the Prometheus test evaluates."""
    return [(spec.title, q.expr) for _, specs in ROWS for spec in specs for q in spec.queries]


if __name__ == "__main__":
    sys.stdout.write(render())
