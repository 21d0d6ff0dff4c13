from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from html_stream import RUNTIME_JS
from html_stream.runtime import PLACEHOLDER_END, placeholder_start, swap_call


def test_runtime_fits_in_400_bytes() -> None:
    """The runtime is at most 400 bytes of UTF-8."""
    assert len(RUNTIME_JS.encode("utf-8")) <= 400


def test_runtime_is_safe_inline() -> None:
    """The runtime is ASCII and cannot end its <script> early."""
    assert RUNTIME_JS.isascii()
    assert "</script" not in RUNTIME_JS.lower() and "<!--" not in RUNTIME_JS


def test_runtime_defines_once() -> None:
    """The runtime only defines $HS when it is not defined yet (idempotent)."""
    assert RUNTIME_JS.startswith("self.$HS||(self.$HS=function(")


def test_markers_match_the_runtime() -> None:
    """The markers and the swap call are the ones the runtime looks for."""
    assert placeholder_start(7) == "<!--$?7-->" and '"$?"+i' in RUNTIME_JS
    assert PLACEHOLDER_END == "<!--/$-->" and 'e.data!="/$"' in RUNTIME_JS
    assert swap_call(7) == "$HS(7)"


# A DOM just big enough for the runtime: nodes, comments, a tree walker over comments
# that does not enter <template> contents, normalize(), currentScript.
FAKE_DOM = r"""
class N {
  constructor(t, d) { this.nodeType = t; this.data = d; this.childNodes = []; this.parentNode = null; }
  get nextSibling() { const p = this.parentNode; if (!p) return null;
    return p.childNodes[p.childNodes.indexOf(this) + 1] || null; }
  get previousSibling() { const p = this.parentNode; if (!p) return null;
    return p.childNodes[p.childNodes.indexOf(this) - 1] || null; }
  get previousElementSibling() { const p = this.parentNode, c = p.childNodes;
    for (let i = c.indexOf(this) - 1; i >= 0; i--) if (c[i].nodeType == 1) return c[i]; return null; }
  remove() { const p = this.parentNode;
    if (p) { p.childNodes.splice(p.childNodes.indexOf(this), 1); this.parentNode = null; } }
  append(...ns) { for (const n of ns) this.insertBefore(n, null); return this; }
  insertBefore(n, ref) {
    const add = n.nodeType == 11 ? n.childNodes.splice(0) : [n];
    let i = ref ? this.childNodes.indexOf(ref) : this.childNodes.length;
    for (const x of add) { x.remove(); x.parentNode = this; this.childNodes.splice(i++, 0, x); }
  }
  normalize() { const out = [];
    for (const c of this.childNodes) { if (c.nodeType == 3) { if (!c.data) continue;
      if (out.length && out[out.length - 1].nodeType == 3) { out[out.length - 1].data += c.data; continue; } }
      out.push(c); }
    this.childNodes = out; }
  toString() { return this.nodeType == 3 ? this.data : this.nodeType == 8 ? "<!--" + this.data + "-->"
    : "<" + this.tag + ">" + this.childNodes.join("") + "</" + this.tag + ">"; }
}
const el = (tag, ...kids) => { const e = new N(1); e.tag = tag; return e.append(...kids); };
const text = d => new N(3, d), comment = d => new N(8, d);
const template = (...kids) => { const t = el("template"); t.content = new N(11); t.content.append(...kids); return t; };
const body = el("body");
const document = {
  currentScript: null,
  imported: 0,
  importNode(n, deep) { if (deep) this.imported++; return n; },  // a copy's scripts run when inserted
  createTreeWalker(root) { const found = [];
    (function walk(n) { for (const c of n.childNodes) { if (c.nodeType == 8) found.push(c); walk(c); } })(body);
    return { nextNode: () => found.shift() || null }; },
};
globalThis.self = globalThis; globalThis.document = document;
function run(script, src) { document.currentScript = script; (0, eval)(src); }
"""

SCENARIO = r"""
const results = {};
const rt1 = el("script"), rt2 = el("script");
body.append(rt1, rt2);
run(rt1, RUNTIME);
const first = self.$HS;
run(rt2, RUNTIME);
results.idempotent = self.$HS === first;
results.runtimeRemoved = body.childNodes.length == 0;

body.append(el("div", text("a"), comment("$?1"), el("p", text("wait")), comment("/$"), text("b")));
const s1 = el("script");
body.append(template(text("X"), el("i", text("y"))), s1);
run(s1, "$HS(1)");
results.swapped = body.toString();
results.textNodes = body.childNodes[0].childNodes.length;
results.contentCopied = document.imported == 1;

const s2 = el("script");
body.append(template(text("orphan")), s2);
let threw = false;
try { run(s2, "$HS(9)"); } catch (e) { threw = true; }
results.goneNoThrow = !threw;
results.goneUntouched = body.toString();

const s3 = el("script");
body.append(s3);
try { run(s3, "$HS(1)"); } catch (e) { threw = true; }
results.noTemplateNoThrow = !threw;
console.log(JSON.stringify(results));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the runtime")
def test_runtime_behaviour_in_a_fake_dom() -> None:
    """The runtime swaps in a copy of the content (so its scripts run), normalizes, removes itself and its
    template, and is a no-op when the target is gone."""
    program = FAKE_DOM + f"const RUNTIME = {json.dumps(RUNTIME_JS)};\n" + SCENARIO
    done = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=30, check=True)
    results = json.loads(done.stdout)
    assert results == {
        "idempotent": True,
        "runtimeRemoved": True,
        "swapped": "<body><div>aX<i>y</i>b</div></body>",
        "textNodes": 3,
        "contentCopied": True,
        "goneNoThrow": True,
        "goneUntouched": "<body><div>aX<i>y</i>b</div></body>",
        "noTemplateNoThrow": True,
    }
