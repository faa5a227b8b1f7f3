"""The sensitivity report as one self-contained HTML page (no network: inline CSS, data and script;
the charts are SVG drawn by the page's own script from the embedded JSON)."""
import html
import json
import os
import tempfile

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea}
.sub{color:#5a6475}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.card{border:1px solid #dde2ea;border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eef1f5;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.grid{display:flex;flex-wrap:wrap;gap:10px}
.hist{border:1px solid #eef1f5;border-radius:4px;padding:4px}.hist div{font-size:11px;width:260px;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}svg text{font:11px system-ui,sans-serif}
"""

_JS = r"""
(function(){
const R=JSON.parse(document.getElementById('data').textContent);
const C={"activations":"#2f6fde","weights":"#e07b20","int8 weights":"#e07b20","int4 weights":"#e07b20"};
const NS='http://www.w3.org/2000/svg';
function el(t,a,p){const e=document.createElementNS(NS,t);for(const k in a)e.setAttribute(k,a[k]);if(p)p.appendChild(e);return e;}
function txt(p,x,y,s,a){const t=el('text',Object.assign({x:x,y:y},a||{}),p);t.textContent=s;return t;}
const pct=v=>(100*v).toFixed(v>=0.1?1:2)+'%';
// ranked bar chart of the shares
const Q=R.quantizers, TOP=25, S=Q.slice(0,TOP), rest=Q.slice(TOP), W=900, L=330, rowH=18, H=(S.length+(rest.length?1:0))*rowH+30;
const bars=el('svg',{width:W,height:H,viewBox:`0 0 ${W} ${H}`,role:'img'},document.getElementById('bars'));
const top=Math.max(1e-12,...Q.map(q=>q.share));
S.forEach((q,i)=>{const y=20+i*rowH, w=(W-L-70)*q.share/top;
  txt(bars,L-6,y+12,(i+1)+'. '+(q.name.length>48?'…'+q.name.slice(-47):q.name),{'text-anchor':'end'});
  const b=el('rect',{class:'bar',x:L,y:y+2,width:Math.max(1,w),height:rowH-5,fill:C[q.kind]||'#888'},bars);
  el('title',{},b).textContent=`${q.name} (${q.kind}): ${pct(q.share)} of the error, rel. L2 alone ${q.relative_l2.join(', ')}`;
  txt(bars,L+Math.max(1,w)+5,y+12,pct(q.share));});
if(rest.length)txt(bars,L-6,20+S.length*rowH+12,`+ ${rest.length} more: ${pct(rest.reduce((a,q)=>a+q.share,0))} of the error together`,{'text-anchor':'end',class:'more'});
txt(bars,L,12,'share of the summed output error (each quantizer alone quantized)');
// output error per model output
const ob=document.getElementById('outputs');
R.outputs.forEach(o=>{const tr=document.createElement('tr');
  tr.innerHTML=`<td>${o.output.replace(/</g,'&lt;')}</td><td class="n">${o.relative_l2.toFixed(5)}</td><td></td>`;
  const s=el('svg',{width:220,height:12},tr.lastChild);
  el('rect',{class:'obar',x:0,y:1,width:Math.max(1,Math.min(220,220*o.relative_l2/Math.max(...R.outputs.map(p=>p.relative_l2),1e-12))),height:10,fill:'#6b4fbb'},s);
  ob.appendChild(tr);});
// range against histogram, in ranked order
const g=document.getElementById('hists');
S.forEach((q,i)=>{const h=q.histogram;if(!h)return;const box=document.createElement('div');box.className='hist';
  const lab=document.createElement('div');lab.textContent=`${i+1}. ${q.name}`;lab.title=q.name;box.appendChild(lab);
  const w=260,hh=80,s=el('svg',{width:w,height:hh+16,class:'histogram'},box);
  const n=h.counts.length,m=Math.max(1,...h.counts),bw=w/n,X=v=>w*(v-h.lo)/(h.hi-h.lo);
  h.counts.forEach((c,k)=>{if(c>0)el('rect',{x:k*bw,y:hh-hh*Math.sqrt(c/m),width:Math.max(1,bw-0.5),height:hh*Math.sqrt(c/m),fill:C[q.kind]||'#888','fill-opacity':0.7},s);});
  if(q.low!==null&&q.high!==null){el('rect',{x:X(q.low),y:0,width:Math.max(1,X(q.high)-X(q.low)),height:hh,fill:'none',stroke:'#c0262d','stroke-width':1.5,'stroke-dasharray':'4 2'},s);}
  txt(s,0,hh+13,`${h.min.toPrecision(3)}…${h.max.toPrecision(3)}`);
  txt(s,w,hh+13,`range [${(q.low??0).toPrecision(3)}, ${(q.high??0).toPrecision(3)}]${h.below+h.above?' · '+(h.below+h.above)+' far out':''}`,{'text-anchor':'end'});
  g.appendChild(box);});
document.body.setAttribute('data-drawn',String(S.length));
})();
"""


def _card(label: str, value: str) -> str:
    return f'<div class="card">{html.escape(label)}<b>{html.escape(value)}</b></div>'


def render(sens: dict, model_name: str, extra: dict = None) -> str:
    """The page for a :func:`ovquant.analyze_sensitivity` result (``extra``: more cards, label -> text)."""
    data = json.dumps(sens, allow_nan=False).replace("</", "<\\/")
    kinds = sorted({q["kind"] for q in sens["quantizers"]})
    cards = [_card("quantizers", str(sens["n_quantizers"])),
             _card("samples (held back)" if sens.get("held_back") else "samples", str(sens["samples"])),
             _card("output error, all quantized (mean rel. L2²)", f"{sens['error_all_quantized']:.3g}"),
             _card("sum of single-quantizer errors", f"{sens['sum_of_errors']:.3g}")]
    if sens.get("cost_vs_fp32_pass") is not None:
        cards.append(_card("cost (× one FP32 pass)", f"{sens['cost_vs_fp32_pass']:.1f}"))
    for k, v in (extra or {}).items():
        cards.append(_card(k, str(v)))
    legend = "".join(f'<span><i class="sw" style="background:{"#2f6fde" if k == "activations" else "#e07b20"}">'
                     f'</i>{html.escape(k)}</span>' for k in kinds)
    legend += '<span><i class="sw" style="border:1.5px dashed #c0262d"></i>quantizer range</span>'
    title = f"ovquant sensitivity: {model_name}"
    top_note = "; the 25 worst" if len(sens["quantizers"]) > 25 else ""
    if sens.get("screened"):
        cards.insert(2, _card("screened on one batch", f"{sens['screened']} ({sens['screen_samples']} samples)"))
    where = "held-back" if sens.get("held_back") else "calibration"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<div class="sub">Output error each quantizer causes alone, on {sens['samples']} {where} samples; the
share is its error over the sum of all single-quantizer errors.</div>
<div class="cards">{''.join(cards)}</div>
<div class="legend">{legend}</div>
<h2>Quantizers ranked by their share of the output error</h2><div id="bars"></div>
<h2>Output error per model output (all quantizers on, relative L2 against FP32)</h2>
<table><thead><tr><th>output</th><th>relative L2</th><th></th></tr></thead><tbody id="outputs"></tbody></table>
<h2>Each quantizer's range against its data (histogram, square-root scale{top_note})</h2><div class="grid" id="hists"></div>
<script type="application/json" id="data">{data}</script>
<script>{_JS}</script></body></html>
"""


def write_html(path: str, sens: dict, model_name: str, extra: dict = None) -> str:
    """Write the page atomically (a temporary file beside ``path``, then a rename); returns ``path``."""
    text = render(sens, model_name, extra)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
