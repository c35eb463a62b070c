#!/usr/bin/env python3
"""
A standalone fake Kubernetes API server for client tests: kmock 0.8's KubernetesEmulator
(storage, discovery from its bundled k3s v1.26 resource list, finalizer-aware delete, watch bus)
plus a thin layer that fills the gaps a real client (kube-rs, kubectl) trips over.

Added here (NOT kmock behaviour):
  * metadata.uid / resourceVersion (one global counter) / creationTimestamp / generation,
    metadata.namespace taken from the URL, generateName
  * Status reasons as the real API server spells them (NotFound, AlreadyExists, Conflict)
  * List responses with kind=<Kind>List, apiVersion and a real metadata.resourceVersion
  * labelSelector (=, ==, !=, in, notin, exists, !exists) and fieldSelector (dotted paths, =, ==, !=)
    on list and watch
  * watch honours resourceVersion (replays logged events newer than it) and timeoutSeconds
  * PUT (replace) with optimistic-concurrency check on metadata.resourceVersion
  * PATCH application/apply-patch+yaml: YAML body parsed; creates the object when missing
    (server-side-apply create-or-update), otherwise a recursive merge (NO field ownership,
    NO managedFields, NO conflict detection)
  * Dray test hooks (not Kubernetes behaviour):
      --token T              every request on the TLS port must carry "Authorization: Bearer T",
                             else 401 Unauthorized (the real server's Status shape)
      --forbid-namespace NS  writes (POST/PUT/PATCH/DELETE) to objects in namespace NS get 403
                             Forbidden with the real server's message wording; reads still work
      --control-port P       the same API also served over plain HTTP on 127.0.0.1:P without
                             the token check or the 403 hook: the tests' own door, where they
                             play the controller (patch /status, create Pods)
Still NOT emulated: strategic-merge list semantics (lists are replaced), managedFields, OpenAPI
(/openapi/v2|v3 -> 404, so kubectl needs --validate=false), admission, defaulting, validation,
controllers (no ReplicaSets/Pods, no status.*), garbage collection via ownerReferences, RBAC/auth
(no token is checked unless --token is given; no roles), pagination (limit/continue ignored), protobuf, deletecollection.

Usage: python k8s_api_emulator.py [--host 127.0.0.1] [--port 6443] [--tls-cert c.pem --tls-key k.pem]
       [--control-port P] [--token T] [--forbid-namespace NS ...]
"""
import argparse
import asyncio
import copy
import datetime
import json
import re
import signal
import ssl
import sys
import uuid
from typing import Any

import aiohttp.web
import attrs
import yaml

import kmock
from kmock._internal import aiobus, enums, k8s as kk8s, parsing, rendering

# kmock 0.8 cannot parse /api/v1/namespaces[/NAME[/status|finalize]] (the Namespace resource itself):
# it takes "namespaces" as the namespace marker and fails. Route those paths to the namespaces resource.
_orig_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip('/').split('/')
    if parts[:3] == ['api', 'v1', 'namespaces'] and len(parts) <= 5 and (len(parts) < 5 or parts[4] in ('status', 'finalize')):
        return parsing.ParsedPath(group='', version='v1', plural='namespaces',
                                  name=parts[3] if len(parts) > 3 else None,
                                  subresource=parts[4] if len(parts) > 4 else None)
    return _orig_parse_path(path)


parsing.parse_path = _parse_path


class LoggingBus(aiobus.Bus):
    """kmock puts watch events on a per-resource bus (under its lock); we also keep a log for replay."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        object.__setattr__(self, 'log', [])

    async def put(self, *items: Any) -> None:
        self.log.extend(copy.deepcopy(list(items)))
        del self.log[:-5000]
        await super().put(*items)


def _rv(ev: dict) -> int:
    try:
        return int(ev.get('object', {}).get('metadata', {}).get('resourceVersion', '0'))
    except ValueError:
        return 0


_SEL = re.compile(r'^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*(\S*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$')


def _split(sel: str) -> list[str]:
    out, depth, cur = [], 0, ''
    for ch in sel:
        depth += ch == '('
        depth -= ch == ')'
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
        else:
            cur += ch
    return [s for s in out + [cur] if s.strip()]


def label_match(sel: str | None, labels: dict) -> bool:
    for term in _split(sel or ''):
        m = _SEL.match(term)
        if not m:
            raise ValueError(f'unable to parse requirement: {term!r}')
        neg, key, op, val, setop, setvals = m.groups()
        have = key in labels
        if op in ('=', '=='):
            ok = have and labels[key] == val
        elif op == '!=':
            ok = not have or labels[key] != val
        elif setop:
            vals = {v.strip() for v in setvals.split(',')}
            ok = (have and labels[key] in vals) if setop == 'in' else (not have or labels[key] not in vals)
        else:
            ok = have != bool(neg)
        if not ok:
            return False
    return True


def field_match(sel: str | None, obj: dict) -> bool:
    for term in _split(sel or ''):
        m = re.match(r'^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$', term)
        if not m:
            raise ValueError(f'unable to parse field selector: {term!r}')
        path, op, val = m.groups()
        cur: Any = obj
        for part in path.split('.'):
            cur = cur.get(part) if isinstance(cur, dict) else None
        cur = '' if cur is None else str(cur)
        if (cur == val) != (op != '!='):
            return False
    return True


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({'apiVersion': 'v1', 'kind': 'Status', 'metadata': {},
                                      'status': 'Failure', 'code': code, 'reason': reason, 'message': message},
                                     status=code)


_REASONS = {400: 'BadRequest', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'AlreadyExists',
            422: 'Invalid', 500: 'InternalError'}

_VERBS = {'POST': 'create', 'PUT': 'update', 'PATCH': 'patch', 'DELETE': 'delete'}


class Guard:
    """The Dray test hooks in front of the TLS port: bearer token (401) and forbidden namespaces (403)."""

    def __init__(self, server: 'K8sServer', token: str | None, forbidden: list[str]) -> None:
        self.server, self.token, self.forbidden = server, token, set(forbidden)

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.token is not None and raw.headers.get('Authorization', '') != f'Bearer {self.token}':
            return _status(401, 'Unauthorized', 'Unauthorized')
        verb = _VERBS.get(raw.method)
        parts = raw.path.strip('/').split('/')
        if verb and 'namespaces' in parts[:-1]:
            i = parts.index('namespaces')
            ns = parts[i + 1]
            rest = parts[i + 2:]
            if ns in self.forbidden and rest:
                group = parts[1] if parts[0] == 'apis' else ''
                plural = rest[0]
                name = rest[1] if len(rest) > 1 else ''
                return _status(403, 'Forbidden',
                               f'{plural}{"." + group if group else ""} "{name}" is forbidden: User "dray" cannot {verb} '
                               f'resource "{plural}" in API group "{group}" in the namespace "{ns}"')
        return await self.server(raw)


@attrs.define(kw_only=True)
class K8sServer(kmock.KubernetesEmulator):
    _rv_counter: int = attrs.field(default=1000, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = __import__('collections').defaultdict(LoggingBus)

    def _next_rv(self) -> str:
        self._rv_counter += 1
        return str(self._rv_counter)

    def _info(self, res: Any) -> Any:
        return self.resources[res] if res in self.resources else None

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kk8s.KubernetesError):
            reason = 'Conflict' if (exc.status == 409 and 'Exists' not in (exc.reason or '')) else \
                _REASONS.get(exc.status, exc.reason or 'Unknown')
            return _status(exc.status, reason, exc.message or reason)
        if isinstance(exc, ValueError):
            return _status(400, 'BadRequest', str(exc))
        return await super()._render_error(exc)

    # ---------------------------------------------------------------- request pre-processing
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)
        ctype = next((v for k, v in request.headers.items() if k.lower() == 'content-type'), '').split(';')[0].strip()
        now = datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')
        info = self._info(request.resource)
        namespaced = info.namespaced if info is not None and info.namespaced is not None else request.namespace is not None

        if 'protobuf' in ctype:   # client-go typed clients (kubectl create ns/cm/secret, helm install) send protobuf
            return _status(415, 'UnsupportedMediaType', f'{ctype} is not supported by this fake server; send JSON')
        # Server-side apply & YAML bodies: kmock only parses JSON bodies.
        if request.method in ('PATCH', 'PUT', 'POST') and request.data is None and request.text.strip():
            try:
                object.__setattr__(request, 'data', yaml.safe_load(request.text))
            except yaml.YAMLError as e:
                return _status(400, 'BadRequest', f'cannot parse body: {e}')

        if request.method == 'PUT' and request.name and not request.subresource:
            return await self._replace(request, now)
        if request.action == enums.action.WATCH:
            return await self._watch_response(request)

        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            exists = request.name is not None and key in self._objects and not self._objects[key].deleted
            if request.action == enums.action.UPDATE and ctype == 'application/apply-patch+yaml' and not exists:
                object.__setattr__(request, 'action', enums.action.CREATE)   # SSA creates when missing
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault('metadata', {})
                if not meta.get('name') and meta.get('generateName'):
                    meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
                if not meta.get('name'):
                    return _status(422, 'Invalid', 'metadata.name: Required value: name or generateName is required')
                if request.name and meta['name'] != request.name:
                    return _status(400, 'BadRequest', 'the name of the object does not match the name on the URL')
                if namespaced and request.namespace:
                    if meta.get('namespace') not in (None, request.namespace):
                        return _status(400, 'BadRequest', 'the namespace of the object does not match the namespace on the URL')
                    meta['namespace'] = request.namespace
                meta.pop('resourceVersion', None)
                meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=now, generation=1)
            elif request.action == enums.action.UPDATE and exists:
                cur = self._objects[key].raw
                cur_rv = cur.get('metadata', {}).get('resourceVersion')
                gen = cur.get('metadata', {}).get('generation', 1)
                if isinstance(request.data, dict):
                    want = request.data.get('metadata', {}).get('resourceVersion')
                    if want and want != cur_rv:
                        return _status(409, 'Conflict', 'the object has been modified; please apply your changes to the latest version and try again')
                    for k in ('uid', 'creationTimestamp', 'namespace', 'name'):
                        request.data.get('metadata', {}).pop(k, None)
                    bump = 'spec' in request.data and not request.subresource
                    request.data.setdefault('metadata', {}).update(resourceVersion=self._next_rv(),
                                                                   generation=gen + (1 if bump else 0))
                elif isinstance(request.data, list):
                    request.data.append({'op': 'add', 'path': '/metadata/resourceVersion', 'value': self._next_rv()})
            elif request.action == enums.action.DELETE and exists:
                self._objects[key].patch({'metadata': {'resourceVersion': self._next_rv()}})
        return await super()._handle(request)

    async def _replace(self, request: rendering.Request, now: str) -> aiohttp.web.StreamResponse:
        if not isinstance(request.data, dict):
            return _status(400, 'BadRequest', 'body must be an object')
        async with self._lock:
            key = (request.resource, request.namespace, request.name)
            if key not in self._objects or self._objects[key].deleted:
                return _status(404, 'NotFound', f'{request.resource.plural} "{request.name}" not found')
            cur = self._objects[key].raw
            meta = request.data.setdefault('metadata', {})
            want = meta.get('resourceVersion')
            if want and want != cur['metadata'].get('resourceVersion'):
                return _status(409, 'Conflict', 'the object has been modified; please apply your changes to the latest version and try again')
            old = cur['metadata']
            meta.update(uid=old.get('uid'), creationTimestamp=old.get('creationTimestamp'), name=request.name,
                        resourceVersion=self._next_rv(),
                        generation=old.get('generation', 1) + (1 if request.data.get('spec') != cur.get('spec') else 0))
            if request.namespace:
                meta['namespace'] = request.namespace
            self._objects[key].create(request.data)
            raw = self._objects[key].raw
            await self._buses[request.resource].put({'type': 'MODIFIED', 'object': raw})
        return aiohttp.web.json_response(raw)

    # ---------------------------------------------------------------- reads
    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        # kmock copies shortNames/categories onto subresource entries (deployments/status...), which makes
        # kubectl ambiguous ("the server doesn't have a resource type ns"); the real server leaves them empty.
        doc = await super()._serve_version(request)
        doc['groupVersion'] = doc['groupVersion'].lstrip('/')   # kmock says "/v1" for the core group
        for r in doc.get('resources', []):
            if '/' in r['name']:
                r['shortNames'], r['categories'] = [], []
                r['verbs'] = ['get', 'patch', 'update']
        return doc

    def _kind_list(self, request: rendering.Request) -> tuple[str, str]:
        res = request.resource
        info = self._info(res)
        kind = (info.kind if info is not None and info.kind else res.plural.capitalize()) + 'List'
        return (res.version if not res.group else f'{res.group}/{res.version}'), kind

    def _selected(self, request: rendering.Request, obj: dict) -> bool:
        return (label_match(request.params.get('labelSelector'), obj.get('metadata', {}).get('labels') or {})
                and field_match(request.params.get('fieldSelector'), obj))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        data = await super()._serve_list(request)
        api_version, kind = self._kind_list(request)
        return {'apiVersion': api_version, 'kind': kind,
                'metadata': {'resourceVersion': str(self._rv_counter)},
                'items': [o for o in data['items'] if self._selected(request, o)]}

    async def _watch_response(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # kmock streams with Content-Type application/octet-stream, which client-go (kubectl -w) rejects.
        if request.resource not in self._get_resources():
            raise kk8s.KubernetesResourceNotFoundError()
        resp = aiohttp.web.StreamResponse(headers={'Content-Type': 'application/json'})
        await resp.prepare(request._raw_request)
        try:
            async for ev in self._serve_watch(request):
                if isinstance(ev, dict):
                    await resp.write(json.dumps(ev).encode() + b'\n')
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    async def _serve_watch(self, request: rendering.Request):
        yield b''
        since = request.params.get('resourceVersion', '')
        timeout = float(request.params.get('timeoutSeconds') or 0) or None
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            if since in ('', '0') or request.params.get('sendInitialEvents') == 'true':
                objs = [o.raw for (r, ns, n), o in self._objects.items()
                        if r == request.resource and not o.deleted
                        and (request.namespace is None or ns == request.namespace)
                        and (request.name is None or n == request.name)]
                backlog = [{'type': 'ADDED', 'object': o} for o in objs]
            else:
                try:
                    backlog = [e for e in bus.log if _rv(e) > int(since)]
                except ValueError:
                    return  # unknown resourceVersion: end the stream; the client relists
        last = 0

        def visible(ev: dict) -> bool:
            meta = ev.get('object', {}).get('metadata', {})
            return ((request.namespace is None or meta.get('namespace') == request.namespace)
                    and (request.name is None or meta.get('name') == request.name)
                    and self._selected(request, ev.get('object', {})))

        for ev in backlog:
            if visible(ev):
                last = max(last, _rv(ev))
                yield ev
        if request.params.get('sendInitialEvents') == 'true':
            # WatchList / streaming list (client-go >= 1.32 "WatchListClient", kube-rs streaming_lists()):
            # the client waits for this bookmark before it considers the initial list complete.
            api_version, kind = self._kind_list(request)
            yield {'type': 'BOOKMARK', 'object': {
                'apiVersion': api_version, 'kind': kind[:-4],
                'metadata': {'resourceVersion': str(max(last, self._rv_counter)),
                             'annotations': {'k8s.io/initial-events-end': 'true'}}}}
        try:
            async with asyncio.timeout(timeout):
                async for ev in mark:
                    if _rv(ev) > last and visible(ev):
                        yield ev
        except TimeoutError:
            return


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=6443)
    p.add_argument('--tls-cert')
    p.add_argument('--tls-key')
    p.add_argument('--control-port', type=int)
    p.add_argument('--token')
    p.add_argument('--forbid-namespace', action='append', default=[])
    a = p.parse_args()
    srv = K8sServer()
    srv.resources.load_bundled()
    ctx = None
    if a.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
    async with srv:
        runners = []
        guarded = Guard(srv, a.token, a.forbid_namespace)
        # Do not wait 60 s for open watches on shutdown.
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(guarded), shutdown_timeout=1.0)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, a.host, a.port, ssl_context=ctx).start()
        runners.append(runner)
        if a.control_port:
            control = aiohttp.web.ServerRunner(aiohttp.web.Server(srv), shutdown_timeout=1.0)
            await control.setup()
            await aiohttp.web.TCPSite(control, '127.0.0.1', a.control_port).start()
            runners.append(control)
        print(f"listening on {'https' if ctx else 'http'}://{a.host}:{a.port}", flush=True)
        stop = asyncio.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(s, stop.set)
        await stop.wait()
        for r in runners:
            await r.cleanup()


if __name__ == '__main__':
    asyncio.run(main())
