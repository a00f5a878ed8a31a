/* Decoding the blob's tables: base64 float16/float32 tables, 8-bit maps, a memo. */
function bytes(b64) {
  var s = atob(b64), u = new Uint8Array(s.length);
  for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
  return u;
}
function f32(b64) { var u = bytes(b64); return new Float32Array(u.buffer, 0, u.length / 4); }
function half(h) {
  var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + f / 1024);
}
function f16(t) {  // a float16 table, or a float32 one ({f32: ...})
  if (!t) return null;
  if (t.f32) return Float64Array.from(f32(t.f32));
  var u = bytes(t.f16), out = new Float64Array(u.length / 2);
  for (var i = 0; i < out.length; i++) out[i] = half(u[2 * i] | (u[2 * i + 1] << 8));
  return out;
}
var cache = {};
function memo(key, fn) { if (!(key in cache)) cache[key] = fn(); return cache[key]; }
function deq(enc) {  // 8-bit maps: value = q / 255 * scale[map]
  return { q: bytes(enc.q), scale: f32(enc.scale), shape: enc.shape, V: enc.shape[enc.shape.length - 1] };
}
