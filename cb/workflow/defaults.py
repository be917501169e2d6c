"""The example workflows stored on first start (CB_LOAD_DEFAULT_WORKFLOWS=false turns them off)."""

from __future__ import annotations

from cb.workflow.model import Transition, Workflow


def _t(id: str, from_place: str, to_place: str, *conditions: str, name: str | None = None) -> Transition:
    return Transition(
        id=id,
        name=name or id.replace("_", " ").capitalize(),
        from_places=(from_place,),
        to_place=to_place,
        conditions=conditions,
    )


def default_workflows() -> list[Workflow]:
    """``document_review`` and ``software_deployment``, as the guide lists them."""
    return [
        Workflow(
            id="document_review",
            name="Document Review Process",
            description="A document is drafted, reviewed, then approved or rejected and revised.",
            places=("draft", "pending_review", "reviewed", "approved", "rejected"),
            initial_place="draft",
            transitions=(
                _t("submit", "draft", "pending_review"),
                _t("review", "pending_review", "reviewed"),
                _t("approve", "reviewed", "approved"),
                _t("reject", "reviewed", "rejected"),
                _t("revise", "rejected", "draft"),
            ),
        ),
        Workflow(
            id="software_deployment",
            name="Software Deployment Pipeline",
            description="A release moves from development through staging to production, with rollback and hotfixes.",
            places=("development", "staging", "production", "rollback", "hotfix"),
            initial_place="development",
            transitions=(
                _t("deploy_to_staging", "development", "staging", "tests_passed"),
                _t("deploy_to_production", "staging", "production", "qa_approved"),
                _t("rollback_from_production", "production", "rollback"),
                _t("create_hotfix", "production", "hotfix", "critical_bug_detected"),
                _t("deploy_hotfix", "rollback", "staging"),
                _t("hotfix_to_staging", "hotfix", "staging", "hotfix_tested"),
            ),
        ),
    ]
