from __future__ import annotations

import factory

from accounts.models import Account

PASSWORD = "correct-horse-battery-9"


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj: Account, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            obj.save()
