"""The LLMjacking audit kill chain, per key or principal.

Stolen cloud credentials are typically used in a recognisable order: reconnaissance
(`ListFoundationModels`, `GetFoundationModelAvailability`, `PutUseCaseForModelAccess`,
`CreateFoundationModelAgreement`), then a check of — or tampering with — invocation logging
(`GetModelInvocationLoggingConfiguration`, `DeleteModelInvocationLoggingConfiguration`), then
invocation. Each stage alone is weak evidence (applications list models too); the sequence is
strong. `ChainState.score(now)` gives the chain's signal and a readable reason.

>>> c = ChainState()
>>> c.audit("ListFoundationModels", 1_000, novel=False); c.score(2_000)[0]
0.15
>>> c.audit("GetModelInvocationLoggingConfiguration", 60_000, novel=True)
>>> c.audit("DeleteModelInvocationLoggingConfiguration", 90_000, novel=True)
>>> c.invoke(120_000); s, why = c.score(120_000); s, why
(0.97, 'audit kill chain: recon → logging check → logging deleted → invocation')
"""

from __future__ import annotations

RECON = frozenset({"ListFoundationModels", "GetFoundationModelAvailability", "PutUseCaseForModelAccess",
                   "CreateFoundationModelAgreement", "ListInferenceProfiles", "GetFoundationModel"})
RARE_RECON = frozenset({"PutUseCaseForModelAccess", "CreateFoundationModelAgreement"})
LOG_CHECK = frozenset({"GetModelInvocationLoggingConfiguration"})
LOG_TAMPER = frozenset({"DeleteModelInvocationLoggingConfiguration", "PutModelInvocationLoggingConfiguration"})
CHAIN_ACTIONS = RECON | LOG_CHECK | LOG_TAMPER
WINDOW_MS = 2 * 3_600_000  # stages further apart than this are not one chain


class ChainState:
    __slots__ = ("recon_ts", "recon_n", "rare", "check_ts", "tamper_ts", "invoke_ts", "novel", "first_ts")

    def __init__(self) -> None:
        self.recon_ts = self.check_ts = self.tamper_ts = self.invoke_ts = self.first_ts = 0
        self.recon_n = 0
        self.rare = False
        self.novel = False  # some stage came from a network new to the key

    def _fresh(self, ts: int, now: int) -> bool:
        return ts > 0 and now - ts <= WINDOW_MS

    def audit(self, action: str, ts: int, novel: bool) -> None:
        if self.first_ts and ts - max(self.recon_ts, self.check_ts, self.tamper_ts, self.first_ts) > WINDOW_MS:
            self.__init__()  # an old chain: start over
        if not self.first_ts:
            self.first_ts = ts
        if action in RECON:
            self.recon_ts = ts
            self.recon_n += 1
            self.rare = self.rare or action in RARE_RECON
        elif action in LOG_CHECK:
            self.check_ts = ts
        elif action in LOG_TAMPER:
            self.tamper_ts = ts
        self.novel = self.novel or novel

    def invoke(self, ts: int) -> None:
        if (self._fresh(self.check_ts, ts) or self._fresh(self.tamper_ts, ts)) and not self.invoke_ts:
            self.invoke_ts = ts

    def score(self, now: int) -> tuple[float, str]:
        recon = self._fresh(self.recon_ts, now)
        check = self._fresh(self.check_ts, now)
        tamper = self._fresh(self.tamper_ts, now)
        invoked = self._fresh(self.invoke_ts, now)
        stages = (["recon"] if recon else []) + (["logging check"] if check else []) + (
            ["logging deleted"] if tamper else []) + (["invocation"] if invoked and (check or tamper) else [])
        if not stages:
            return 0.0, ""
        if tamper:
            s = 0.97 if invoked else 0.8
        elif check:
            s = 0.6 if (recon or invoked) else 0.35
        else:
            s = 0.35 if (self.rare or self.recon_n >= 4) else 0.15
        if self.novel and s < 0.9:
            s = min(0.9, s + 0.15)
        return s, "audit kill chain: " + " → ".join(stages)

    def active(self, now: int) -> bool:
        return any(self._fresh(t, now) for t in (self.recon_ts, self.check_ts, self.tamper_ts))


class ChainLinks:
    """Ties audit records to keys when they do not name the key.

    Many audit trails name only the principal (an IAM user or role), and usage records may name
    only the key: `learn` remembers principal → key from any event carrying both, `key_for` maps
    a principal-only record to its key. The source addresses of recent kill-chain calls are kept
    too, so invocations from the same address pick up the chain even without a principal.

    >>> links = ChainLinks()
    >>> links.learn("bedrock", "arn:aws:iam::1:user/app", "AKIA1")
    >>> links.key_for("bedrock", "arn:aws:iam::1:user/app"), links.key_for("bedrock", None)
    ('AKIA1', None)
    >>> c = ChainState(); c.audit("GetModelInvocationLoggingConfiguration", 1_000, novel=True)
    >>> links.note_ip("9.9.9.9", c, 1_000); links.chain_for_ip("9.9.9.9", 60_000) is c
    True
    """

    __slots__ = ("key_of", "by_ip")
    MAX = 200_000

    def __init__(self) -> None:
        self.key_of: dict[tuple[str, str], str] = {}
        self.by_ip: dict[str, ChainState] = {}

    def learn(self, provider: str, principal: str, key_id: str) -> None:
        k = (provider, principal)
        if self.key_of.get(k) != key_id:
            self.key_of.pop(k, None)
            self.key_of[k] = key_id  # most recent key of the principal (insertion order = age)
            if len(self.key_of) > self.MAX:
                del self.key_of[next(iter(self.key_of))]

    def usage(self, e, ts: int, chain: ChainState | None, novelty: float) -> ChainState | None:
        """On a usage event: remember its principal's key; without a chain, find one by address
        when the caller is new to the key (`novelty` > 0.25)."""
        if e.principal is not None:
            self.learn(e.provider, e.principal, e.key_id)
        if chain is None and novelty > 0.25 and e.source_ip:
            chain = self.chain_for_ip(e.source_ip, ts)
        return chain

    def key_for(self, provider: str, principal: str | None) -> str | None:
        return self.key_of.get((provider, principal)) if principal else None

    def note_ip(self, ip: str, chain: ChainState, ts: int) -> None:
        self.by_ip[ip] = chain
        if len(self.by_ip) > 10_000:
            del self.by_ip[next(iter(self.by_ip))]

    def chain_for_ip(self, ip: str, now: int) -> ChainState | None:
        c = self.by_ip.get(ip)
        return c if c is not None and c.active(now) else None

    def prune(self, now: int) -> None:
        for ip in [ip for ip, c in self.by_ip.items() if not c.active(now)]:
            del self.by_ip[ip]

    def __getstate__(self):
        return (self.key_of, self.by_ip)

    def __setstate__(self, st) -> None:
        self.key_of, self.by_ip = st
