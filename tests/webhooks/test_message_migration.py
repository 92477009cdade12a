"""Messages stored before accounts had a message list appear in it after the migration."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("webhooks", "0006_raw_retention_and_storage"), ("accounts", "0003_totp_seed")]
AFTER = [
    ("webhooks", "0007_inboundmessage_subject_accountmessage"),
    ("accounts", "0004_account_message_count"),
]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_messages_to_the_accounts_they_went_to():
    old = migrate(BEFORE)
    try:
        account = old.get_model("accounts", "Account")
        domain = old.get_model("domains", "Domain")
        webhook = old.get_model("webhooks", "Webhook")
        message = old.get_model("webhooks", "InboundMessage")
        delivery = old.get_model("webhooks", "Delivery")
        alice = account.objects.create(email="alice@example.com", password="!")
        bob = account.objects.create(email="bob@example.org", password="!")
        hooks = []
        for owner, address in (
            (alice, "a@x.example"),
            (alice, "b@x.example"),
            (bob, "c@x.example"),
        ):
            where = domain.objects.create(account=owner, name=f"{address[0]}.example")
            hooks.append(
                webhook.objects.create(
                    account=owner,
                    domain=where,
                    address=address,
                    target_url="https://t/",
                    secret="s",
                )
            )
        to_both = message.objects.create(raw=b"x")  # to alice twice and to bob
        to_alice = message.objects.create(raw=b"y")
        for item, hook in ((to_both, hooks[0]), (to_both, hooks[1]), (to_both, hooks[2])):
            delivery.objects.create(message=item, webhook=hook)
        delivery.objects.create(message=to_alice, webhook=hooks[0])

        new = migrate(AFTER)

        views = new.get_model("webhooks", "AccountMessage").objects
        assert sorted((v.account_id, v.message_id) for v in views.all()) == sorted(
            [(alice.id, to_both.id), (alice.id, to_alice.id), (bob.id, to_both.id)]
        )
        assert all(v.received_at == v.message.received_at for v in views.all())
        counts = dict(
            new.get_model("accounts", "Account").objects.values_list("email", "message_count")
        )
        assert counts == {"alice@example.com": 2, "bob@example.org": 1}
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
