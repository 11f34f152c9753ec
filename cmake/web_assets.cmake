# boneage_embed_web(TARGET)
# Compiles the page's files (web/*) into TARGET as byte arrays (serve/web_assets.hpp), so the
# binary serves the page it was built with, wherever it runs. Regenerated when a file changes.
function(boneage_embed_web target)
  file(GLOB files CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/web/*)
  set(out ${CMAKE_BINARY_DIR}/generated/web_assets.cpp)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DWEB_DIR=${CMAKE_SOURCE_DIR}/web
            -P ${CMAKE_SOURCE_DIR}/cmake/web_assets_generate.cmake
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/cmake/web_assets_generate.cmake
    COMMENT "Embedding web/ into the service" VERBATIM)
  target_sources(${target} PRIVATE ${out})
  set_source_files_properties(${out} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
endfunction()
