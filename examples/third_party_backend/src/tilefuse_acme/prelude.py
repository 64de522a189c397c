"""C++ helpers every generated kernel starts with: torch's semantics where C++ differs.

NaN-propagating ``maximum``/``minimum``, ATen's floor division and remainder, integer
powers, and rounding of float values to bfloat16/float16 precision (16-bit values live in
``float`` variables and are rounded wherever torch would round them).
"""

PRELUDE = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

template <typename T> static inline T tf_maximum(T a, T b) {
    if (a != a) return a;
    if (b != b) return b;
    return a > b ? a : b;
}
template <typename T> static inline T tf_minimum(T a, T b) {
    if (a != a) return a;
    if (b != b) return b;
    return a < b ? a : b;
}
template <typename T> static inline T tf_floordiv_int(T a, T b) {
    if (b == 0) return 0;  // torch raises; a kernel cannot, and must not trap
    T q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
}
template <typename T> static inline T tf_remainder_int(T a, T b) {
    if (b == 0) return 0;
    T m = a % b;
    if (m != 0 && ((m < 0) != (b < 0))) m += b;
    return m;
}
template <typename T> static inline T tf_fmod_int(T a, T b) { return b == 0 ? 0 : a % b; }
template <typename T> static inline T tf_floordiv_float(T a, T b) {  // ATen's div_floor
    if (b == 0) return a / b;
    T mod = std::fmod(a, b);
    T div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1;
    if (div == 0) return std::copysign(T(0), a / b);
    T floored = std::floor(div);
    if (div - floored > T(0.5)) floored += 1;
    return floored;
}
template <typename T> static inline T tf_remainder_float(T a, T b) {
    T m = std::fmod(a, b);
    if (m != 0 && ((b < 0) != (m < 0))) m += b;
    return m;
}
template <typename T> static inline T tf_ipow(T base, T exp) {
    if (exp < 0) return base == 1 ? 1 : (base == -1 ? ((exp & 1) ? -1 : 1) : 0);
    T out = 1;
    while (exp) {
        if (exp & 1) out *= base;
        base *= base;
        exp >>= 1;
    }
    return out;
}
template <typename T> static inline T tf_sign(T a) { return T((a > 0) - (a < 0)); }  // NaN: 0
static inline float tf_round_bf16(float f) {  // round to nearest even, NaN kept
    if (f != f) return f;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline float tf_from_bf16(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t tf_to_bf16(float f) {
    if (f != f) return 0x7fc0u;
    f = tf_round_bf16(f);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return uint16_t(u >> 16);
}
static inline float tf_round_f16(float f) { return float(_Float16(f)); }
static inline float tf_from_f16(_Float16 h) { return float(h); }
static inline _Float16 tf_to_f16(float f) { return _Float16(f); }
"""
