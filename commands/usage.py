"""``flask cb usage summary``: spend from the usage ledger, the figures of ``costAnalytics``."""

from __future__ import annotations

import click

from cb.errors import ValidationError
from cb.llm.analytics import AnalyticsFilter
from commands import Failure, OperatorGroup, json_option, operator, print_json, table


def money(cost: float) -> str:
    """Dollars with every digit the ledger kept (10 decimal places at most), no trailing zeros."""
    text = f"{cost:.10f}".rstrip("0").rstrip(".")
    return "$" + (text or "0")


def cost(group: dict) -> str:
    """A group's spend, or "unpriced" when none of its requests had a price."""
    return "unpriced" if group["unpriced_requests"] == group["requests"] else money(group["cost"])


@click.group("usage", cls=OperatorGroup)
def usage() -> None:
    """Usage and cost, from the ledger every server appends to."""


@usage.command("summary")
@click.option("--since", metavar="DATE", help="First day (YYYY-MM-DD) or ISO datetime counted.")
@click.option("--until", metavar="DATE", help="Last day counted (inclusive), or an ISO datetime.")
@json_option
def summary(since: str | None, until: str | None, as_json: bool) -> None:
    """Total spend, requests and tokens, per provider, per model and per day (UTC); requests of
    models nobody prices are counted as UNPRICED (their cost is not in the totals)."""
    analytics = operator().services().analytics
    try:
        period = AnalyticsFilter.from_input({"start_date": since, "end_date": until})
    except ValidationError as exc:  # named as costAnalytics names them; here they are options
        raise Failure(exc.message.replace("start_date", "--since").replace("end_date", "--until")) from None
    report = analytics.report(period)
    if as_json:
        print_json(report)
        return
    click.echo(f"Usage from {report['period_start'] or 'the first record'} to {report['period_end'] or 'the last'}")
    click.echo(
        f"Total: {money(report['total_cost'])}, {report['total_requests']} request(s), "
        f"{report['total_tokens']} tokens ({report['prompt_tokens']} prompt, "
        f"{report['completion_tokens']} completion)"
    )
    if report["unpriced_requests"]:
        click.echo(
            f"Unpriced: {report['unpriced_requests']} request(s) of models with no known price, not in the total; "
            "price them in CB_CONFIG [prices] or the deployment's prices"
        )
    if not report["total_requests"]:
        return
    for title, groups in (
        ("PROVIDER", report["provider_breakdown"]),
        ("MODEL", report["model_breakdown"]),
        ("DAY", {d["date"]: d for d in report["daily_usage"]}),
    ):
        click.echo("")
        rows = [[name, g["requests"], g["tokens"], cost(g), g["unpriced_requests"]] for name, g in groups.items()]
        for line in table(rows, [title, "REQUESTS", "TOKENS", "COST", "UNPRICED"]):
            click.echo(line)


def register(group: click.Group) -> None:
    group.add_command(usage)
