"""Private Dovecot (IMAP, IMAPS, LMTP, SASL for Postfix) and Postfix (submission) for tests.

Follows ../shared/docs/imap-smtp-notes.md: own base_dir/state_dir/log, 127.0.0.1 only,
free ports, mail processes as nobody (root may not own mail), a self-signed cert with
the IP in subjectAltName so verifying clients accept it as their CA.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

AUTHSERV_ID = "mx.example.test"
PASSWORD = "secret-pw"
USERS = 400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing_binaries() -> str | None:
    for name in ("dovecot", "postfix", "openssl"):
        if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists():
            return f"{name} is not installed (apt-get install dovecot-imapd dovecot-lmtpd postfix)"
    if not Path("/usr/lib/dovecot/lmtp").exists():
        return "dovecot-lmtpd is not installed"
    if os.geteuid() != 0:
        return "a private Postfix needs root"
    return None


def make_cert(d: Path) -> tuple[Path, Path]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o644)  # Dovecot's and Postfix's unprivileged processes read it
    return cert, key


def _wait_greeting(port: int, log: Path, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100):
                    return
        except OSError:
            time.sleep(0.05)
    text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not greet on port {port}:\n{text}")


@dataclass
class MailServers:
    root: Path
    cert: Path
    imap_port: int
    imaps_port: int
    lmtp_port: int
    submission_port: int

    def user(self, n: int) -> str:
        """The n-th account (all made at start: Dovecot re-reads passwd-file by mtime, in seconds)."""
        return f"user{n}@example.test"

    def deliver(self, raw: bytes, to: str, sender: str = "someone@example.test") -> None:
        with smtplib.LMTP("127.0.0.1", self.lmtp_port) as lmtp:
            lmtp.sendmail(sender, [to], raw)


def _dovecot_conf(d: Path, s: MailServers) -> str:
    nobody = pwd.getpwnam("nobody")
    return f"""
instance_name = amtest-{s.imap_port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{s.cert}
ssl_key = <{d}/key.pem
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
mail_fsync = never
first_valid_uid = 1
first_valid_gid = 1
passdb {{
  driver = passwd-file
  args = username_format=%n {d}/passwd
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={d}/mail/%n allow_all_users=yes
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {s.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {s.imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {s.lmtp_port}
  }}
}}
service auth {{
  user = root
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@example.test
}}
"""


_MASTER = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""


def _postfix_conf(d: Path, s: MailServers) -> str:
    return f"""
compatibility_level = 3.6
queue_directory = {d}/pf/queue
data_directory = {d}/pf/data
maillog_file = {d}/pf/maillog
maillog_file_prefixes = {d}
myhostname = {AUTHSERV_ID}
mydomain = example.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {d}/run/auth-postfix
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_tls_security_level = may
smtpd_tls_cert_file = {s.cert}
smtpd_tls_key_file = {d}/key.pem
header_checks = regexp:{d}/pf/header_checks
default_transport = lmtp:inet:127.0.0.1:{s.lmtp_port}
"""


def start(d: Path) -> tuple[MailServers, list[list[str]]]:
    """Start both servers under ``d`` (chmod 755 so nobody reaches the maildirs)."""
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    cert, _ = make_cert(d)
    s = MailServers(d, cert, free_port(), free_port(), free_port(), free_port())
    (d / "passwd").write_text("".join(f"user{n}:{{PLAIN}}{PASSWORD}\n" for n in range(USERS)))
    (d / "passwd").chmod(0o644)
    for sub in ("run", "state", "mail", "pf/conf", "pf/queue", "pf/data"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "mail").chmod(0o777)
    (d / "dovecot.conf").write_text(_dovecot_conf(d, s))
    with open(d / "dovecot.out", "wb") as out:
        subprocess.run(["dovecot", "-c", str(d / "dovecot.conf")], check=True,
                       stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    _wait_greeting(s.imap_port, d / "dovecot.log", "dovecot")
    pf = d / "pf"
    # The submission MTA stamps what it verified (SASL login) the way a real MX would.
    (pf / "header_checks").write_text(
        f"/^Message-ID:/ PREPEND Authentication-Results: {AUTHSERV_ID}; auth=pass "
        "smtp.auth=submission; dkim=pass; spf=pass; dmarc=pass\n")
    (pf / "conf" / "main.cf").write_text(_postfix_conf(d, s))
    (pf / "conf" / "master.cf").write_text(_MASTER.format(port=f"127.0.0.1:{s.submission_port}"))
    shutil.chown(pf / "data", "postfix")
    (pf / "data").chmod(0o700)
    conf = str(pf / "conf")
    for cmd in (["postfix", "-c", conf, "check"], ["postfix", "-c", conf, "start"]):
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr}{done.stdout}")
    _wait_greeting(s.submission_port, pf / "maillog", "postfix")
    stops = [["postfix", "-c", conf, "stop"], ["doveadm", "-c", str(d / "dovecot.conf"), "stop"]]
    return s, stops


def stop(stops: list[list[str]], d: Path) -> None:
    for cmd in stops:
        subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
    pid = d / "run" / "master.pid"
    if pid.exists():
        try:
            os.kill(int(pid.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
