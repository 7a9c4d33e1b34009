"""The report page's style sheet and its one script (allowed by hash in the page's policy)."""

CSS = """
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:16px 20px;background:#f4f4f6;color:#1c1c1e}
h1{font-size:20px;margin:0 0 4px}
.folders{color:#6e6e73;font-size:12px;margin:0 0 12px;word-break:break-all}
.top{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin-bottom:12px}
.tiles{display:flex;gap:8px;flex-wrap:wrap}
.tile{background:#fff;border-radius:8px;padding:8px 14px;min-width:92px;box-shadow:0 1px 2px #0002}
.tile b{display:block;font-size:22px}
.tile span{color:#6e6e73;font-size:12px}
table.stats{border-collapse:collapse;background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002}
table.stats td,table.stats th{padding:3px 10px;text-align:right;font-variant-numeric:tabular-nums}
.hist{background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002}
.hist text{font-size:11px;fill:#3a3a3c}
.controls{display:flex;gap:12px;align-items:center;margin:8px 0 12px;flex-wrap:wrap}
.controls select,.controls input{font:inherit;padding:3px 6px}
#shown{color:#6e6e73}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:12px;align-items:start}
.card{margin:0;background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 2px #0002;
 border-top:4px solid #34c759}
.card.fail{border-top-color:#ff3b30}
.card[hidden]{display:none}
.frame{position:relative;cursor:pointer;background:#ddd;outline:none}
.frame img{display:block;width:100%;height:auto}
.frame .missing{padding:40px 8px;text-align:center;color:#6e6e73}
.card.broken .frame::after{content:"image not found";position:absolute;inset:0;display:flex;
 align-items:center;justify-content:center;color:#6e6e73;background:#eee}
.box{position:absolute;display:none;border:2px solid var(--c);box-shadow:0 0 0 1px #0008;
 pointer-events:none}
.box span{position:absolute;left:0;top:0;background:var(--c);
 color:#000;font-size:11px;padding:0 4px;white-space:nowrap;max-width:220px;overflow:hidden;
 text-overflow:ellipsis}
.frame:hover .box,.frame:focus .box,.card.show-boxes .box,body.all-boxes .box{display:block}
figcaption{padding:8px 10px}
.meta{display:flex;gap:8px;align-items:baseline;font-size:12px;color:#6e6e73}
.score{font-weight:700;font-size:15px;color:#1c1c1e;font-variant-numeric:tabular-nums}
.fail .score{color:#d70015}
.meta>span{white-space:nowrap}
.meta .path{min-width:0;color:inherit;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
 margin-left:auto}
.caption{margin:4px 0 0;overflow-wrap:anywhere;display:-webkit-box;-webkit-box-orient:vertical;
 -webkit-line-clamp:4;line-clamp:4;overflow:hidden}
.caption.long{cursor:pointer}
.caption.open{display:block;-webkit-line-clamp:none;line-clamp:none}
.more{font:inherit;font-size:12px;border:0;padding:0;background:none;color:#0a84ff;cursor:pointer}
.errors{background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002;border-left:4px solid #ff3b30;
 padding:8px 12px;margin:0 0 12px}
.errors h2{font-size:16px;margin:0 0 6px}
.errors p{margin:0 0 6px;color:#6e6e73;font-size:12px}
.errors table{border-collapse:collapse}
.errors td,.errors th{padding:2px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
.phrases{margin:4px 0 0;font-size:12px;color:#6e6e73}
"""

SCRIPT = """
(() => {
  const grid = document.getElementById('cards');
  const cards = Array.from(grid.querySelectorAll('.card'));
  const sort = document.getElementById('sort');
  const root = document.getElementById('root');
  const find = document.getElementById('find');
  const shown = document.getElementById('shown');
  const allBoxes = document.getElementById('all-boxes');
  allBoxes.checked = location.hash === '#boxes';
  const showAllBoxes = () => document.body.classList.toggle('all-boxes', allBoxes.checked);
  const score = (c) => (c.dataset.score === '' ? NaN : parseFloat(c.dataset.score));
  function compare(a, b) {
    if (sort.value === 'path') return a.dataset.path.localeCompare(b.dataset.path);
    const x = score(a), y = score(b);
    if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);  // unscored last
    return sort.value === 'desc' ? y - x : x - y;
  }
  function apply() {
    const needle = find.value.trim().toLowerCase();
    let count = 0;
    for (const card of cards.slice().sort(compare)) {
      const text = (card.dataset.path + ' ' + card.querySelector('.caption').textContent).toLowerCase();
      card.hidden = (root.value !== 'all' && card.dataset.root !== root.value) ||
        (needle !== '' && !text.includes(needle));
      if (!card.hidden) count += 1;
      grid.appendChild(card);
    }
    shown.textContent = count + ' of ' + cards.length + ' shown';
  }
  // A caption is clamped to a few lines; one that overflows shows its "more" button, and a
  // click on either shows the whole text (and a second click clamps it again).
  function openCaption(event) {
    const card = event.target.closest('.card');
    const caption = card && card.querySelector('.caption.long');
    if (!caption || !(event.target === caption || event.target.classList.contains('more'))) return false;
    const open = caption.classList.toggle('open');
    card.querySelector('.more').textContent = open ? 'less' : 'more';
    return true;
  }
  function toggle(event) {
    if (event.type === 'click' && openCaption(event)) return;
    const frame = event.target.closest('.frame');
    if (!frame) return;
    if (event.type === 'keydown' && event.key !== 'Enter' && event.key !== ' ') return;
    event.preventDefault();
    frame.closest('.card').classList.toggle('show-boxes');
  }
  for (const img of grid.querySelectorAll('img')) {
    const card = img.closest('.card');
    const mark = () => card.classList.add(img.naturalWidth ? 'loaded' : 'broken');
    if (img.complete) mark();
    else { img.addEventListener('load', mark); img.addEventListener('error', mark); }
  }
  for (const caption of grid.querySelectorAll('.caption')) {
    if (caption.scrollHeight > caption.clientHeight + 1) {
      caption.classList.add('long');
      caption.closest('figcaption').querySelector('.more').hidden = false;
    }
  }
  sort.addEventListener('change', apply);
  root.addEventListener('change', apply);
  find.addEventListener('input', apply);
  allBoxes.addEventListener('change', showAllBoxes);
  grid.addEventListener('click', toggle);
  grid.addEventListener('keydown', toggle);
  apply();
  showAllBoxes();
  document.body.dataset.ready = '1';
})();
"""
