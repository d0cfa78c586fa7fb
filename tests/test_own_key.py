"""A return arriving while the gateway's own key cannot be unlocked: never blamed on the provider, left in
INBOX, the administrator alerted once; handled normally once the passphrase is right. Real Dovecot, relay, gpg."""

from __future__ import annotations

import shutil

from helpers import ADMIN, PROVIDER_SENDER, provider_message

from gateway.demo.sample import people, workbook
from gateway.keys import AGENT_CONF, Keyring

PASSPHRASE = "the-right-passphrase"


def test_a_locked_own_key_leaves_the_return_in_inbox_and_alerts_once(deployment, directory, monkeypatch):
    home = deployment.root / "var" / "gnupg"
    shutil.rmtree(home)
    keyring = Keyring(home)
    (home / "gpg-agent.conf").write_text(AGENT_CONF)
    fingerprint = keyring.generate("LDOR gateway", "ldor@example.org", PASSPHRASE, expire="2y")
    config = deployment.config
    config.write_text(config.read_text().replace('home = "var/gnupg"', 'home = "var/gnupg"\npassphrase_env = "TEST_GPG_PASSPHRASE"'))
    rows = [p.cells() for p in people(directory, {"E09000019": 2})]
    sealed = keyring.encrypt(workbook("Example College", "10001234", rows), fingerprint)  # as a provider encrypts to the gateway
    keyring.stop_agent()
    deployment.deliver(provider_message([("return.xlsx.gpg", sealed)]))

    monkeypatch.delenv("TEST_GPG_PASSPHRASE", raising=False)
    assert deployment.run_once() == 0  # passphrase_env names a variable that is not set
    monkeypatch.setenv("TEST_GPG_PASSPHRASE", "wrong")
    assert deployment.run_once() == 0  # set, but wrong: the same failure, not alerted again
    assert len(deployment.imap.list_uids("INBOX")) == 1
    mails = deployment.captured()
    assert not [m for m in mails if PROVIDER_SENDER in str(m["To"])], "the provider was answered"
    alerts = [m for m in mails if ADMIN in str(m["To"])]
    assert len(alerts) == 1, [m["Subject"] for m in alerts]
    body = alerts[0].get_body().get_content()
    assert ("needs a passphrase and the variable TEST_GPG_PASSPHRASE ([gnupg] passphrase_env) is not set" in body)
    assert "damaged" not in body

    monkeypatch.setenv("TEST_GPG_PASSPHRASE", PASSPHRASE)
    assert deployment.run_once() == 0
    assert len(deployment.imap.list_uids("INBOX")) == 0
    receipts = [m for m in deployment.captured() if PROVIDER_SENDER in str(m["To"])]
    assert len(receipts) == 1 and "2 of 2 rows forwarded" in str(receipts[0]["Subject"]), [str(m["Subject"]) for m in receipts]
    assert [m for m in deployment.captured() if "ldor@islington.example" in str(m["To"])]
    assert len([m for m in deployment.captured() if ADMIN in str(m["To"])]) == 1
