"""The console's routes, mounted at ``/console`` of ``flywheel serve``.

Server-rendered pages (Jinja2 templates and a little CSS/JS shipped in this package, no
CDN). Reading pages need a signed-in key of any console role; reviewing feedback needs
reviewer or admin; promoting, rolling back and managing keys need admin. Every POST
checks the form's CSRF token first (403 without it) and the role second (403), so a
refused request changes nothing. Errors from the loop (a refused promotion, an unknown
label) come back as a page with the one-line message and a 4xx status.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from aiflywheel.console import analytics_views, views
from aiflywheel.console.i18n import LANGUAGES, translator
from aiflywheel.console.session import (
    ANON_COOKIE,
    CONSOLE_ROLES,
    LANG_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    ConsoleUser,
    Signer,
    console_secret,
)
from aiflywheel.errors import DataError, FlywheelError
from aiflywheel.store import API_KEY_ROLES, Store

HERE = Path(__file__).parent
PREFIX = "/console"
NAV = (
    ("features", "/console", "view"),
    ("review", "/console/review", "view"),
    ("audit", "/console/audit", "view"),
    ("runs", "/console/runs", "view"),
    ("drift", "/console/drift", "view"),
    ("insights", "/console/insights", "view"),
    ("planner", "/console/planner", "view"),
    ("keys", "/console/keys", "admin"),
)
REVIEW_SHOWN = 200  # items the review queue lists at once (bulk actions reach every match)
NOTES = ("signed_out", "promoted", "rolled_back", "reviewed", "revoked", "sent", "answered")


class Denied(Exception):
    """Refused before anything changed: 401 (sign in), 403 (role or CSRF)."""

    def __init__(self, status: int, message_key: str, **values: Any) -> None:
        super().__init__(message_key)
        self.status = status
        self.message_key = message_key
        self.values = values


def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fig"] = views.figure
    env.filters["money"] = lambda v: "–" if v is None else f"{v:.4g}"
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.1%}"
    env.filters["when"] = lambda v: "–" if v is None else f"{v:%Y-%m-%d %H:%M}"
    return env


class Console:
    """Per-app console state: templates, the signer, the store and the auth switch."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.env = _environment()
        self._signer: Signer | None = None

    @property
    def store(self) -> Store:
        state = getattr(self.app.state, "flywheel", None)
        if state is None:
            raise Denied(503, "err.starting")
        return state.store

    @property
    def auth(self) -> bool:
        state = getattr(self.app.state, "flywheel", None)
        return bool(state.config.auth) if state is not None else True

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            from aiflywheel.settings import get_settings

            self._signer = Signer(console_secret(get_settings().home))
        return self._signer

    # -- who is asking ------------------------------------------------------------
    def user(self, request: Request) -> ConsoleUser | None:
        if not self.auth:
            sid = request.cookies.get(ANON_COOKIE) or ""
            return ConsoleUser("-", "anonymous (auth off)", "admin", sid)
        body = self.signer.read_session(request.cookies.get(SESSION_COOKIE))
        if body is None:
            return None
        key = self.store.get_api_key(str(body.get("kid", "")))
        if key is None or key.revoked_at is not None or key.role != body.get("role"):
            return None
        return ConsoleUser(key.key_id, key.name, key.role, str(body["sid"]))

    def require(self, request: Request, permission: str) -> ConsoleUser:
        user = self.user(request)
        if user is None:
            raise Denied(401, "err.signin")
        if not user.can(permission):
            raise Denied(403, "err.role", role=user.role, needs=permission)
        return user

    async def form(self, request: Request, permission: str | None) -> tuple[Any, ConsoleUser]:
        """The posted form, after the CSRF check (403) and the role check (403)."""
        form = await request.form()
        user = await run_in_threadpool(self.user, request)
        token = str(form.get("csrf") or "")
        # Either the session's token or (forms rendered before sign-in) the anonymous one:
        # both cookies are HttpOnly and SameSite=Strict, so another site knows neither.
        sids = [user.sid if user is not None else None, request.cookies.get(ANON_COOKIE)]
        if not any(self.signer.check_csrf(sid, token) for sid in sids):
            raise Denied(403, "err.csrf")
        if permission is not None:
            if user is None:
                raise Denied(401, "err.signin")
            if not user.can(permission):
                raise Denied(403, "err.role", role=user.role, needs=permission)
        return form, user  # type: ignore[return-value]

    # -- answers ------------------------------------------------------------------
    def lang(self, request: Request) -> str:
        chosen = request.cookies.get(LANG_COOKIE, "")
        if chosen in LANGUAGES:
            return chosen
        accepted = request.headers.get("accept-language", "").lower()
        return "zh" if accepted.startswith("zh") else "en"

    def render(
        self,
        request: Request,
        template: str,
        user: ConsoleUser | None,
        *,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        lang = self.lang(request)
        sid = user.sid if user is not None and user.sid else request.cookies.get(ANON_COOKIE)
        fresh_sid = None
        if not sid:
            sid = fresh_sid = secrets.token_urlsafe(16)
        note = request.query_params.get("note", "")
        html = self.env.get_template(template).render(
            t=translator(lang),
            lang=lang,
            languages=LANGUAGES,
            user=user,
            auth=self.auth,
            csrf=self.signer.csrf_token(sid),
            nav=[(key, href) for key, href, needs in NAV if user is not None and user.can(needs)],
            path=request.url.path,
            here=str(request.url.path)
            + (f"?{request.url.query}" if request.url.query else ""),
            note=note if note in NOTES else "",
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        if fresh_sid is not None:
            _cookie(response, ANON_COOKIE, fresh_sid, max_age=SESSION_SECONDS)
        return response

    def message(
        self, request: Request, user: ConsoleUser | None, status: int, text: str
    ) -> HTMLResponse:
        back = request.headers.get("referer", "")
        return self.render(
            request, "message.html.j2", user, status=status, text=text, back=local_path(back)
        )


def _cookie(response: Response, name: str, value: str, *, max_age: int, http_only=True) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=http_only,
        samesite="strict",
    )


def local_path(target: str) -> str:
    """``target`` if it is a console path on this server, else the console's home."""
    if "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    if target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX


def redirect(target: str, note: str | None = None) -> RedirectResponse:
    if note:
        target += ("&" if "?" in target else "?") + urlencode({"note": note})
    return RedirectResponse(target, status_code=303)


def _review_filter(source: Any) -> views.ReviewFilter:
    version = str(source.get("version") or "").strip()
    state = str(source.get("state", "pending") or "")
    if state not in ("", "pending", "accepted", "rejected"):
        raise DataError(f"state must be pending, accepted or rejected, got {state!r}")
    return views.ReviewFilter(
        state=state,
        predicted=str(source.get("predicted") or "").strip(),
        corrected=str(source.get("corrected") or "").strip(),
        version=views.int_field(version, "version") if version else None,
    )


def mount_console(app: FastAPI) -> None:
    """Add the console's pages and static files to ``app`` under ``/console``."""
    console = Console(app)
    app.state.console = console
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    def page(permission: str) -> Callable:
        """A GET page: the signed-in user with ``permission``, errors as pages."""

        def wrap(build: Callable[[Request, ConsoleUser], Response]):
            def handler(request: Request) -> Response:
                try:
                    user = console.require(request, permission)
                except Denied as denied:
                    if denied.status == 401:
                        return redirect(
                            f"{PREFIX}/login?" + urlencode({"next": str(request.url.path)})
                        )
                    raise
                try:
                    return build(request, user)
                except FlywheelError as exc:
                    from aiflywheel.serve.app import status_of

                    return console.message(request, user, status_of(exc), views.describe_error(exc))

            handler.__name__ = build.__name__
            return handler

        return wrap

    async def act(request: Request, permission: str, work: Callable) -> Response:
        """A POST action: CSRF and role checks, then ``work(form, user)`` in a thread."""
        form, user = await console.form(request, permission)
        try:
            return await run_in_threadpool(work, form, user)
        except FlywheelError as exc:
            from aiflywheel.serve.app import status_of

            return console.message(request, user, status_of(exc), views.describe_error(exc))

    @app.exception_handler(Denied)
    async def _denied(request: Request, exc: Denied) -> Response:
        user = await run_in_threadpool(console.user, request) if exc.status != 503 else None
        text = translator(console.lang(request))(exc.message_key, **exc.values)
        return console.message(request, user, exc.status, text)

    # -- sign in / out, language ------------------------------------------------------
    @router.get("/login")
    def login_page(request: Request) -> Response:
        return console.render(
            request, "login.html.j2", None, next=local_path(request.query_params.get("next", ""))
        )

    @router.post("/login")
    async def login(request: Request) -> Response:
        form, _ = await console.form(request, None)
        token = str(form.get("key") or "").strip()
        target = local_path(str(form.get("next") or ""))
        row = await run_in_threadpool(console.store.authenticate, token)
        t = translator(console.lang(request))
        if row is None:
            return console.render(
                request, "login.html.j2", None, status=401, next=target, error=t("err.badkey")
            )
        if row.role not in CONSOLE_ROLES:
            return console.render(
                request,
                "login.html.j2",
                None,
                status=403,
                next=target,
                error=t("err.apikey", role=row.role),
            )
        response = redirect(target)
        cookie = console.signer.session_cookie(row.key_id, row.name, row.role)
        _cookie(response, SESSION_COOKIE, cookie, max_age=SESSION_SECONDS)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        await console.form(request, None)
        response = redirect(f"{PREFIX}/login", "signed_out")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @router.post("/lang")
    async def set_language(request: Request) -> Response:
        form, _ = await console.form(request, None)
        lang = str(form.get("lang") or "")
        if lang not in LANGUAGES:
            raise DataError(f"lang must be one of {', '.join(LANGUAGES)}, got {lang!r}")
        response = redirect(local_path(str(form.get("next") or "")))
        _cookie(response, LANG_COOKIE, lang, max_age=365 * 86400, http_only=False)
        return response

    # -- features and versions --------------------------------------------------------
    @router.get("")
    @page("view")
    def features(request: Request, user: ConsoleUser) -> Response:
        rows = views.features_overview(console.store)
        extras = analytics_views.feature_extras(console.store, [r["name"] for r in rows])
        return console.render(request, "features.html.j2", user, rows=rows, extras=extras)

    @router.get("/features/{feature}")
    @page("view")
    def feature(request: Request, user: ConsoleUser) -> Response:
        name = request.path_params["feature"]
        views.require_feature(console.store, name)
        return console.render(
            request,
            "feature.html.j2",
            user,
            feature=name,
            versions=views.feature_versions(console.store, name),
            champion=console.store.champion(name),
        )

    @router.get("/features/{feature}/versions/{version}")
    @page("view")
    def version(request: Request, user: ConsoleUser) -> Response:
        name = request.path_params["feature"]
        number = views.int_field(request.path_params["version"], "version")
        detail = views.version_detail(console.store, name, number)
        return console.render(request, "version.html.j2", user, v=detail)

    @router.get("/features/{feature}/versions/{version}/report")
    @page("view")
    def version_report(request: Request, user: ConsoleUser) -> Response:
        name = request.path_params["feature"]
        number = views.int_field(request.path_params["version"], "version")
        path = views.version_report(console.store, name, number)
        return FileResponse(path, media_type="text/html; charset=utf-8")

    @router.post("/features/{feature}/versions/{version}/promote")
    async def promote(request: Request) -> Response:
        name = request.path_params["feature"]
        number = views.int_field(request.path_params["version"], "version")

        def work(form: Any, user: ConsoleUser) -> Response:
            from aiflywheel.core.versions import promote as promote_version

            reason = str(form.get("reason") or "").strip()
            if not reason:
                raise DataError(f"promoting {name} v{number} needs a reason (for the audit log)")
            promote_version(
                console.store,
                name,
                number,
                actor=user.actor,
                reason=reason,
                force=form.get("force") == "on",
            )
            return redirect(f"{PREFIX}/features/{name}/versions/{number}", "promoted")

        return await act(request, "admin", work)

    @router.post("/features/{feature}/rollback")
    async def rollback(request: Request) -> Response:
        name = request.path_params["feature"]

        def work(form: Any, user: ConsoleUser) -> Response:
            from aiflywheel.core.versions import rollback as rollback_version

            reason = str(form.get("reason") or "").strip()
            if not reason:
                raise DataError(f"rolling back {name} needs a reason (for the audit log)")
            to = str(form.get("to") or "").strip()
            event = rollback_version(
                console.store,
                name,
                actor=user.actor,
                reason=reason,
                to_version=views.int_field(to, "to") if to else None,
            )
            return redirect(f"{PREFIX}/features/{name}/versions/{event.to_version}", "rolled_back")

        return await act(request, "admin", work)

    # -- review queue -----------------------------------------------------------------
    @router.get("/review")
    @page("view")
    def review(request: Request, user: ConsoleUser) -> Response:
        names = views.feature_names(console.store)
        name = request.query_params.get("feature") or (names[0] if names else "")
        where = _review_filter(request.query_params)
        items, total = [], 0
        if name:
            items, total = views.review_page(console.store, name, where, REVIEW_SHOWN)
        counts = console.store.feedback_counts(name) if name else {}
        return console.render(
            request,
            "review.html.j2",
            user,
            features=names,
            feature=name,
            where=where,
            items=items,
            total=total,
            counts=counts,
            labels=views.label_choices(items),
            handoffs=views.handoffs(console.store, name) if name else [],
        )

    @router.post("/review/answer")
    async def review_answer(request: Request) -> Response:
        def work(form: Any, user: ConsoleUser) -> Response:
            name = str(form.get("feature") or "")
            views.answer_handoff(
                console.store,
                name,
                views.int_field(form.get("ref"), "ref"),
                str(form.get("answer") or ""),
                actor=user.actor,
            )
            return redirect(local_path(str(form.get("next") or "")), "answered")

        return await act(request, "review", work)

    @router.post("/review/decide")
    async def review_decide(request: Request) -> Response:
        def work(form: Any, user: ConsoleUser) -> Response:
            name = str(form.get("feature") or "")
            views.require_feature(console.store, name)
            fid = views.int_field(form.get("id"), "id")
            views.decide_feedback(
                console.store,
                name,
                [fid],
                str(form.get("action") or ""),
                label=str(form.get("label") or "") or None,
                reviewer=user.actor,
            )
            return redirect(local_path(str(form.get("next") or "")), "reviewed")

        return await act(request, "review", work)

    @router.post("/review/bulk")
    async def review_bulk(request: Request) -> Response:
        def work(form: Any, user: ConsoleUser) -> Response:
            name = str(form.get("feature") or "")
            views.require_feature(console.store, name)
            where = _review_filter(form)
            ids = [item.id for item in views.review_items(console.store, name, where)]
            views.decide_feedback(
                console.store,
                name,
                ids,
                str(form.get("action") or ""),
                label=str(form.get("label") or "") or None,
                reviewer=user.actor,
            )
            return redirect(local_path(str(form.get("next") or "")), "reviewed")

        return await act(request, "review", work)

    # -- audit, runs, keys ------------------------------------------------------------
    @router.get("/audit")
    @page("view")
    def audit(request: Request, user: ConsoleUser) -> Response:
        q = request.query_params
        where = views.AuditFilter(
            feature=q.get("feature", ""),
            action=q.get("action", ""),
            actor=q.get("actor", ""),
            decision=q.get("decision", ""),
        )
        return console.render(
            request,
            "audit.html.j2",
            user,
            events=views.audit_timeline(console.store, where),
            where=where,
            features=views.feature_names(console.store),
            choices=views.audit_choices(console.store),
        )

    @router.get("/runs")
    @page("view")
    def runs(request: Request, user: ConsoleUser) -> Response:
        name = request.query_params.get("feature") or None
        if name:
            views.require_feature(console.store, name)
        return console.render(
            request,
            "runs.html.j2",
            user,
            runs=console.store.list_runs(name, limit=100),
            feature=name or "",
            features=views.feature_names(console.store),
        )

    @router.get("/runs/{run_id}")
    @page("view")
    def run(request: Request, user: ConsoleUser) -> Response:
        detail = views.run_detail(console.store, request.path_params["run_id"])
        return console.render(request, "run.html.j2", user, d=detail)

    def keys_page(request: Request, user: ConsoleUser, created: str | None = None) -> Response:
        return console.render(
            request,
            "keys.html.j2",
            user,
            keys=console.store.list_api_keys(),
            roles=API_KEY_ROLES,
            created=created,
        )

    @router.get("/keys")
    @page("admin")
    def keys(request: Request, user: ConsoleUser) -> Response:
        return keys_page(request, user)

    @router.post("/keys/create")
    async def keys_create(request: Request) -> Response:
        def work(form: Any, user: ConsoleUser) -> Response:
            role = str(form.get("role") or "")
            key, _ = console.store.create_api_key(role, str(form.get("name") or "").strip())
            return keys_page(request, user, created=key)

        return await act(request, "admin", work)

    @router.post("/keys/revoke")
    async def keys_revoke(request: Request) -> Response:
        def work(form: Any, user: ConsoleUser) -> Response:
            console.store.revoke_api_key(str(form.get("key_id") or ""))
            return redirect(f"{PREFIX}/keys", "revoked")

        return await act(request, "admin", work)

    analytics_views.add_routes(router, console, page, act)
    app.include_router(router)


__all__ = ["Console", "Denied", "mount_console"]
