// What the processor this process runs on can do, read at run time (cpuid and the operating
// system's saved-state mask), so one binary picks bf16 only where the CPU computes it natively.
//
//   if (boneage::native_bf16()) ...;                 // AVX512_BF16 or AMX-BF16 usable here
//   std::cerr << boneage::cpu_description();         // "AMD EPYC 9R14 (2 threads; avx512_bf16)"
#pragma once

#include <string>

namespace boneage {

struct CpuFeatures {
    std::string model;         // brand string, e.g. "AMD EPYC 9R14 96-Core Processor"
    bool avx2 = false;
    bool avx512f = false;      // usable: the CPU has it and the OS saves the ZMM state
    bool avx512_bf16 = false;  // VDPBF16PS and conversions, usable
    bool amx_bf16 = false;     // AMX tiles with bf16, usable (the OS saves the tile state)
};

// The features of this CPU, detected once.
const CpuFeatures& cpu_features();

// Whether AVX512_BF16 instructions can run here.
bool has_avx512_bf16();

// Whether AMX-BF16 tile instructions can run here.
bool has_amx_bf16();

// Whether bf16 arithmetic is native here (either of the two above), so bf16 inference is
// faster than fp32 rather than emulated.
bool native_bf16();

// One line for logs and benchmark footers: the model, the threads this process may use and
// the widest vector and bf16 features, e.g. "AMD EPYC 9R14 (2 threads; avx512, avx512_bf16)".
std::string cpu_description();

}  // namespace boneage
