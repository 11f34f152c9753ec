# boneage_stage(NAME DEPS libs... [TORCH])
# Builds src/NAME/*.cpp into the static library boneage_NAME. TORCH marks a stage that
# includes LibTorch: it gets the shared precompiled header, which saves most of its build time.
function(boneage_stage name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  set(deps ${ARG_DEPS})
  list(REMOVE_ITEM deps TORCH)
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/${name}/*.cpp)
  if(NOT sources)
    set(sources ${CMAKE_SOURCE_DIR}/cmake/empty.cpp)
  endif()
  add_library(boneage_${name} STATIC ${sources})
  target_include_directories(boneage_${name} PUBLIC ${CMAKE_SOURCE_DIR}/include
                                             PRIVATE ${CMAKE_SOURCE_DIR}/src)
  target_link_libraries(boneage_${name} PUBLIC ${deps} fmt::fmt)
  target_compile_options(boneage_${name} PRIVATE -Wall -Wextra)
  if("TORCH" IN_LIST ARG_DEPS)
    boneage_torch_pch(boneage_${name})
  endif()
endfunction()

# LibTorch headers cost ~20 s per translation unit; one precompiled header shared by every
# target that includes them brings that down to about a second.
function(boneage_torch_pch target)
  if(NOT TARGET boneage_torch_pch_anchor)
    add_library(boneage_torch_pch_anchor STATIC ${CMAKE_SOURCE_DIR}/cmake/empty.cpp)
    target_link_libraries(boneage_torch_pch_anchor PUBLIC ${TORCH_LIBRARIES} OpenMP::OpenMP_CXX)
    target_precompile_headers(boneage_torch_pch_anchor PUBLIC <torch/torch.h>)
  endif()
  # The header's OpenMP parts (at::parallel_for) are in the shared header: same flags everywhere.
  target_link_libraries(${target} PUBLIC OpenMP::OpenMP_CXX)
  target_precompile_headers(${target} REUSE_FROM boneage_torch_pch_anchor)
endfunction()
