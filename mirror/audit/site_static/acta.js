/* acta-mirror: search the index and check an acta in the browser. No server, no library. */
'use strict';
var ACTA = (function () {
  var body = document.body, root = body.getAttribute('data-root') || '';
  var places = [], names = {}, states = [], hasNames = false, centers = {}, asked = {};
  var signed = null;

  function norm(s) {
    return String(s).normalize('NFD').replace(/[\u0300-\u036f]/g, '').toLowerCase().replace(/[^a-z0-9]+/g, ' ').trim();
  }
  // Links are built from codes alone, checked here: no recorded text ever becomes a URL.
  function folder(code) {
    if (!/^(\d{2}|\d{4}|\d{6}|\d{9})$/.test(code)) return null;
    var parts = [code.slice(0, 2)];
    if (code.length > 2) parts.push(code.slice(2, 4));
    if (code.length > 4) parts.push(code.slice(4, 6));
    if (code.length > 6) parts.push(code);
    return root + parts.join('/') + '/';
  }
  function loadState(ss) {
    if (!/^\d{2}$/.test(ss) || states.indexOf(ss) < 0 || asked[ss]) return;
    asked[ss] = true;
    var s = document.createElement('script');
    s.src = root + 'buscar/e' + ss + '.js';
    s.onerror = function () { centers[ss] = []; search(); };
    body.appendChild(s);
  }
  function context(code) {
    var out = [];
    [2, 4, 6].forEach(function (n) { if (code.length > n && names[code.slice(0, n)]) out.push(names[code.slice(0, n)]); });
    return out.join(' › ');
  }
  function search() {
    var box = document.getElementById('q'), list = document.getElementById('results');
    if (!box || !list) return;
    var q = box.value, n = norm(q), found = [], waiting = false;
    if (n) {
      if (/^\s*\d/.test(q)) {
        var nums = q.replace(/\D+/g, ' ').trim().split(' '), code = nums[0], table = nums[1];
        var codes = code.length < 9 ? [code, '0' + code] : [code];
        codes.forEach(function (c) {
          if (c.length < 2) return;
          var ss = c.slice(0, 2);
          loadState(ss);
          if (states.indexOf(ss) >= 0 && !centers[ss]) waiting = true;
          (centers[ss] || []).forEach(function (ce) {
            if (ce[0].indexOf(c) !== 0) return;
            var label = (ce[1] || 'Centro ' + ce[0]) + ' (' + ce[0] + ')';
            if (table && ce[0] === c) {
              var t = parseInt(table, 10);
              if (ce[2].indexOf(t) >= 0) {
                var tt = (t < 10 ? '0' : '') + t;
                found.push([folder(ce[0]) + ce[0] + '.' + tt + '.html', 'Mesa ' + t + ' · ' + label, context(ce[0])]);
              }
            } else {
              found.push([folder(ce[0]) + 'index.html', label, context(ce[0])]);
            }
          });
        });
      } else {
        var words = n.split(' ');
        var match = function (text) { return words.every(function (w) { return text.indexOf(w) >= 0; }); };
        places.forEach(function (p) { if (match(p[3])) found.push([folder(p[0]) + 'index.html', p[1], context(p[0])]); });
        if (hasNames) {
          states.forEach(function (ss) { loadState(ss); if (!centers[ss]) waiting = true; });
          states.forEach(function (ss) {
            (centers[ss] || []).forEach(function (ce) {
              if (ce[1] && match(ce[3])) found.push([folder(ce[0]) + 'index.html', ce[1] + ' (' + ce[0] + ')', context(ce[0])]);
            });
          });
        }
      }
    }
    list.textContent = '';
    found.slice(0, 50).forEach(function (f) {
      var li = document.createElement('li'), a = document.createElement('a');
      a.href = f[0];
      a.textContent = f[1];
      li.appendChild(a);
      if (f[2]) { var s = document.createElement('span'); s.textContent = ' ' + f[2]; li.appendChild(s); }
      list.appendChild(li);
    });
    var status = document.getElementById('search-status');
    status.textContent = !n ? '' : found.length ? found.length + (found.length === 1 ? ' resultado' : ' resultados') +
      (found.length > 50 ? ' (se muestran 50)' : '') + (waiting ? '; buscando más…' : '') :
      waiting ? 'Buscando…' : 'Nada coincide con «' + q + '» en este espejo.';
  }
  function setupSearch() {
    var form = document.getElementById('search');
    if (!form) return;
    document.getElementById('q').addEventListener('input', search);
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      search();
      var first = document.querySelector('#results a');
      if (first) window.location.href = first.href;
    });
  }

  // -- the check: sha256 of the bytes, the RFC 9162 inclusion proof, the root's Ed25519 signature
  function hex(b) { return Array.prototype.map.call(new Uint8Array(b), function (x) { return (x < 16 ? '0' : '') + x.toString(16); }).join(''); }
  function unhex(s) { var o = new Uint8Array(s.length / 2); for (var i = 0; i < o.length; i++) o[i] = parseInt(s.substr(2 * i, 2), 16); return o; }
  function unb64(s) { var t = atob(s), o = new Uint8Array(t.length); for (var i = 0; i < t.length; i++) o[i] = t.charCodeAt(i); return o; }
  function cat() {
    var n = 0, i, o, at = 0;
    for (i = 0; i < arguments.length; i++) n += arguments[i].length;
    o = new Uint8Array(n);
    for (i = 0; i < arguments.length; i++) { o.set(arguments[i], at); at += arguments[i].length; }
    return o;
  }
  function sha(b) { return crypto.subtle.digest('SHA-256', b).then(function (d) { return new Uint8Array(d); }); }
  async function walk(leaf, index, size, path) {  // RFC 9162, 2.1.3.2
    if (!(index >= 0 && index < size)) return null;
    var fn = index, sn = size - 1, r = leaf;
    for (var i = 0; i < path.length; i++) {
      if (sn === 0) return null;
      if ((fn & 1) || fn === sn) {
        r = await sha(cat([1], path[i], r));
        if (!(fn & 1)) while (fn && !(fn & 1)) { fn >>= 1; sn >>= 1; }
      } else {
        r = await sha(cat([1], r, path[i]));
      }
      fn >>= 1; sn >>= 1;
    }
    return sn === 0 ? r : null;
  }
  function Fail(msg) { this.message = msg; }
  function keyId(b) { return hex(b.slice(2, 10).reverse()).toUpperCase(); }
  async function check(bytes) {
    var proof = JSON.parse(document.getElementById('acta-proof').textContent), utf8 = new TextEncoder();
    if (!window.crypto || !crypto.subtle) throw new Fail('este navegador no ofrece WebCrypto; ábrala por https o localhost');
    var digest = hex(await sha(bytes));
    if (!proof.sha256) throw new Fail('el sitio no trae la prueba de inclusión de esta acta');
    if (digest !== proof.sha256) throw new Fail('la imagen no es la archivada: su sha256 es ' + digest + ', el archivado es ' + proof.sha256);
    step('1. sha256 de la imagen: ' + digest + ', el archivado.');
    if (proof.leaf.indexOf(digest + '  ') !== 0) throw new Fail('la prueba de inclusión es de otro archivo');
    var top = await walk(await sha(cat([0], utf8.encode(proof.leaf))), proof.index, proof.size, proof.path.map(unhex));
    if (!top) throw new Fail('la prueba de inclusión está mal formada');
    step('2. La prueba de inclusión lleva a la raíz ' + hex(top) + '.');
    if (!signed || !signed.pubkey) throw new Fail('el sitio no trae la clave pública del firmante');
    if (!signed.sig) throw new Fail('el espejo no está firmado');
    var pk = unb64(signed.pubkey), sig = unb64(signed.sig), glob = unb64(signed.glob);
    if (pk.length !== 42 || sig.length !== 74) throw new Fail('la clave pública o la firma están dañadas');
    if (keyId(sig) !== keyId(pk)) throw new Fail('la firma de la raíz es de la clave ' + keyId(sig) + ', no de la clave publicada ' + keyId(pk));
    var key = await crypto.subtle.importKey('raw', pk.slice(10), { name: 'Ed25519' }, false, ['verify']);
    if (!await crypto.subtle.verify({ name: 'Ed25519' }, key, glob, cat(sig.slice(10), utf8.encode(signed.trusted))))
      throw new Fail('la firma de la raíz no es válida con la clave ' + keyId(pk));
    var m = /^acta-mirror merkle root ([0-9a-f]{64}) size (\d+)$/.exec(signed.trusted);
    if (!m) throw new Fail('la firma no nombra una raíz de Merkle');
    if (hex(top) !== m[1] || +m[2] !== proof.size) throw new Fail('la prueba de inclusión no lleva a la raíz firmada (' + m[1] + ')');
    step('3. La raíz está firmada por la clave ' + keyId(pk) + ' (Ed25519).');
  }
  function step(text) { var li = document.createElement('li'); li.textContent = text; document.getElementById('verify-steps').appendChild(li); }
  function result(status, text) { var r = document.getElementById('verify-result'); r.setAttribute('data-status', status); r.textContent = text; }
  function run(getBytes) {
    document.getElementById('verify-steps').textContent = '';
    result('running', 'Comprobando…');
    getBytes().then(function (bytes) {
      return check(new Uint8Array(bytes)).then(function () {
        result('ok', 'Acta verificada: es la archivada y la raíz firmada la incluye.');
      });
    }).catch(function (e) {
      if (e && e.needFile) return result('need-file', e.message);
      result('fail', 'No verificada: ' + (e instanceof Fail ? e.message : 'error inesperado (' + e + ')'));
    });
  }
  function setupCheck() {
    var button = document.getElementById('verify');
    if (!button) return;
    var proof = JSON.parse(document.getElementById('acta-proof').textContent);
    function get(url) {
      return fetch(url).catch(function () { throw new Fail('no se pudo leer la imagen'); }).then(function (r) {
        if (!r.ok) throw new Fail('no se pudo descargar la imagen (HTTP ' + r.status + ')');
        return r.arrayBuffer();
      });
    }
    button.addEventListener('click', function () {
      run(function () {
        // The mirror's copy first; then the IPFS gateway's (a Git shard may hold other states).
        return get(proof.image).catch(function (first) {
          if (proof.gateway) return get(proof.gateway);
          throw first;
        }).catch(function (e) {
          if (location.protocol !== 'file:') throw e;
          var ask = new Error('El navegador no deja leer la imagen desde un archivo (file://): elíjala con el botón «Elegir archivo».');
          ask.needFile = true;
          throw ask;
        });
      });
    });
    document.getElementById('verify-file').addEventListener('change', function (ev) {
      var file = ev.target.files[0];
      if (file) run(function () { return file.arrayBuffer(); });
    });
    var img = document.getElementById('acta');
    function fallback() { if (proof.gateway && img.getAttribute('src') !== proof.gateway) img.src = proof.gateway; }
    img.addEventListener('error', fallback);
    if (img.complete && !img.naturalWidth) fallback();
    var zoom = document.getElementById('zoom');
    zoom.addEventListener('click', function () {
      var on = document.getElementById('acta-box').classList.toggle('zoomed');
      zoom.setAttribute('aria-pressed', on ? 'true' : 'false');
    });
  }
  window.addEventListener('DOMContentLoaded', function () { setupSearch(); setupCheck(); });
  return {
    places: function (list, stateCodes, named) {
      places = list.map(function (p) { names[p[0]] = p[1]; return [p[0], p[1], p[2], norm(p[1])]; });
      states = stateCodes; hasNames = named;
      search();
    },
    centers: function (ss, list) {
      centers[ss] = list.map(function (c) { return [c[0], c[1], c[2], norm(c[1])]; });
      search();
    },
    signed: function (data) { signed = data; }
  };
})();
