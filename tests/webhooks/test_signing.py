import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks.signing import generate_secret, mask_secret, sign, signature_headers

BODY = '{"subject":"Hällo \\"world\\"","n":1}'.encode()


def _headers(secret: str, body: bytes = BODY, msg_id: str = "msg_2abc") -> dict[str, str]:
    return signature_headers(secret=secret, msg_id=msg_id, timestamp=int(time.time()), body=body)


def test_generate_secret_format_and_uniqueness():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert generate_secret() != secret


def test_signature_verifies_with_standardwebhooks():
    secret = generate_secret()
    headers = _headers(secret)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, headers) == {"subject": 'Hällo "world"', "n": 1}


def test_tampered_body_is_rejected():
    secret = generate_secret()
    headers = _headers(secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"1", b"2"), headers)


def test_other_secret_is_rejected():
    headers = _headers(generate_secret())
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_tampered_id_or_timestamp_is_rejected():
    secret = generate_secret()
    headers = _headers(secret)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        ts = str(int(headers["webhook-timestamp"]) - 1)
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": ts})


def test_known_vector():
    key = b"k" * 32
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = base64.b64encode(
        hmac.new(key, b"id1.1700000000.hello", hashlib.sha256).digest()
    ).decode()
    signature = sign(secret=secret, msg_id="id1", timestamp=1700000000, body=b"hello")
    assert signature == f"v1,{expected}"


def test_unpadded_secret_matches_padded():
    secret = generate_secret()  # 32 bytes -> base64 ends with one "="
    assert secret.endswith("=")
    args = {"msg_id": "m", "timestamp": 1, "body": b"x"}
    assert sign(secret=secret.rstrip("="), **args) == sign(secret=secret, **args)


@pytest.mark.parametrize("secret", ["plain-secret", "whsec_not base64!!"])
def test_non_base64_secret_uses_utf8_of_whole_string(secret):
    expected = base64.b64encode(
        hmac.new(secret.encode(), b"m.5.body", hashlib.sha256).digest()
    ).decode()
    assert sign(secret=secret, msg_id="m", timestamp=5, body=b"body") == f"v1,{expected}"


def test_empty_secret_is_refused():
    with pytest.raises(ValueError):
        sign(secret="", msg_id="m", timestamp=1, body=b"")


def test_bare_prefix_falls_back_to_literal_string():
    expected = base64.b64encode(hmac.new(b"whsec_", b"m.1.", hashlib.sha256).digest()).decode()
    assert sign(secret="whsec_", msg_id="m", timestamp=1, body=b"") == f"v1,{expected}"


def test_mask_secret():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    masked = mask_secret(secret)
    assert masked == "whsec_****LaSw"
    assert "MfKQ" not in masked
    assert mask_secret("whsec_short") == "whsec_****"
    assert mask_secret("abcdefghijklmnopqrstuvwxyz") == "****wxyz"
    assert mask_secret("") == "****"
