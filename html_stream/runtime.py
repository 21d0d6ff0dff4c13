# The inline script that swaps a streamed boundary into its placeholder.
#
# The stream strategy writes a placeholder where a boundary stands,
#     <!--$?7-->fallback<!--/$-->
# and, when the boundary completes, appends at the end of <body>
#     <template>content</template><script>$HS(7)</script>
# $HS(7) takes the <template> just before the calling script, finds the comment
# "$?7", removes everything up to the next "/$" comment, inserts a copy of the
# template's content there (document.importNode), drops both markers, normalises
# the parent's text nodes (so the DOM equals the one parsed in place), and removes
# the template and the script.
# Scripts in a boundary's content run once, when it is swapped in: the parser never
# runs a script inside a <template>, and a script it created is marked
# parser-inserted, so moving it into the document need not run it (engines differ);
# a copy made by importNode is not, so it runs as it is inserted (WHATWG HTML
# §4.12.1.1 "prepare the script element"), with the nonce the writer gave it
# (cloning keeps the nonce). in_order and buffer run them where the parser meets them.
# Comments and <template> were chosen because the HTML parser keeps both in place
# in every insertion mode, including inside <table> and <select> (WHATWG HTML
# §13.2.6.4); the template and script go at the end of <body>, outside any table.
# Between the markers stand only the fallback's elements (and blank text), so the
# end marker is the first following node whose data is "/$".
#
# Properties the tests rely on: at most 400 bytes; defining it twice is harmless
# (`self.$HS||`); a missing placeholder or template is a no-op; no framework; the
# defining <script> removes itself, so the final DOM has no trace of the runtime.
# Readable form:
#     self.$HS || (self.$HS = function (id) {
#       var d = document, s = d.currentScript, t = s.previousSibling;
#       s.remove();
#       if (t?.content) {
#         var w = d.createTreeWalker(d, 128 /* NodeFilter.SHOW_COMMENT */), n, e, p;
#         while (n = w.nextNode()) if (n.data == "$?" + id) {
#           p = n.parentNode;
#           while ((e = n.nextSibling) && e.data != "/$") e.remove();
#           p.insertBefore(d.importNode(t.content, true), e); e?.remove(); n.remove(); p.normalize();
#           break;
#         }
#         t.remove();
#       }
#     });
#     document.currentScript.remove();
from __future__ import annotations

__all__ = ["PLACEHOLDER_END", "RUNTIME_JS", "SWAP_FUNCTION", "placeholder_start", "swap_call"]

SWAP_FUNCTION = "$HS"

RUNTIME_JS = (
    "self.$HS||(self.$HS=function(i,d,s,t,w,n,e,p){d=document;s=d.currentScript;"
    "t=s.previousSibling;s.remove();if(t?.content){w=d.createTreeWalker(d,128);"
    'while(n=w.nextNode())if(n.data=="$?"+i){p=n.parentNode;'
    'while((e=n.nextSibling)&&e.data!="/$")e.remove();'
    "p.insertBefore(d.importNode(t.content,1),e);e?.remove();n.remove();p.normalize();break}"
    "t.remove()}});document.currentScript.remove()"
)

PLACEHOLDER_END = "<!--/$-->"


def placeholder_start(boundary_id: int) -> str:
    """The comment that opens boundary `boundary_id`'s placeholder."""
    return f"<!--$?{boundary_id}-->"


def swap_call(boundary_id: int) -> str:
    """The script body that swaps boundary `boundary_id` in: ``$HS(7)``."""
    return f"{SWAP_FUNCTION}({boundary_id})"
