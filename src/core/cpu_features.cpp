// CPU feature detection with cpuid. A feature counts only when the operating system also saves
// its register state on a context switch (XCR0), since an instruction the kernel does not
// support faults even where the CPU has it.
#include <boneage/cpu_features.hpp>
#include <boneage/parallel.hpp>

#include <cpuid.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace boneage {

namespace {

struct Regs {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf = 0) {
    Regs r;
    __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
    return r;
}

bool bit(unsigned value, int n) { return (value >> n) & 1u; }

// XCR0: which register states the OS saves. Readable only when OSXSAVE is set.
std::uint64_t os_saved_state() {
    if (!bit(cpuid(1).ecx, 27)) return 0;
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

std::string brand_string() {
    if (cpuid(0x80000000u).eax < 0x80000004u) return "unknown CPU";
    char text[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
        Regs r = cpuid(0x80000002u + i);
        std::memcpy(text + 16 * i, &r, 16);
    }
    std::string s(text);
    s.erase(0, s.find_first_not_of(' '));
    s.erase(s.find_last_not_of(' ') + 1);
    return s;
}

CpuFeatures detect() {
    CpuFeatures f;
    f.model = brand_string();
    const unsigned max_leaf = cpuid(0).eax;
    if (max_leaf < 7) return f;
    const std::uint64_t xcr0 = os_saved_state();
    const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM
    const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
    const bool os_amx = (xcr0 & 0x60000) == 0x60000;     // XTILECFG and XTILEDATA
    const Regs l7 = cpuid(7, 0);
    const Regs l7s1 = l7.eax >= 1 ? cpuid(7, 1) : Regs{};
    f.avx2 = os_avx && bit(l7.ebx, 5);
    f.avx512f = os_avx512 && bit(l7.ebx, 16);
    f.avx512_bf16 = f.avx512f && bit(l7s1.eax, 5);
    f.amx_bf16 = os_amx && bit(l7.edx, 22);
    return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

bool has_avx512_bf16() { return cpu_features().avx512_bf16; }
bool has_amx_bf16() { return cpu_features().amx_bf16; }
bool native_bf16() { return has_avx512_bf16() || has_amx_bf16(); }

std::string cpu_description() {
    const CpuFeatures& f = cpu_features();
    std::vector<const char*> names;
    if (f.avx512f)
        names.push_back("avx512");
    else if (f.avx2)
        names.push_back("avx2");
    if (f.avx512_bf16) names.push_back("avx512_bf16");
    if (f.amx_bf16) names.push_back("amx_bf16");
    std::string s = f.model + " (" + std::to_string(default_thread_count()) + " threads";
    for (std::size_t i = 0; i < names.size(); ++i) s += (i == 0 ? "; " : ", ") + std::string(names[i]);
    return s + ")";
}

}  // namespace boneage
