# SPDX-License-Identifier: Apache-2.0
# rendr_warnings(<target>): the project's warning set, applied per target (K2).
function(rendr_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual
                                           -Wnull-dereference -Wformat=2)
  if(RENDR_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  if(RENDR_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

# rendr_library(<module> SOURCES ...): one library per module, alias rendr::<module> (M6).
function(rendr_library module)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  add_library(rendr_${module} STATIC ${ARG_SOURCES})
  add_library(rendr::${module} ALIAS rendr_${module})
  target_include_directories(rendr_${module}
    PUBLIC $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  # EXPORT_NAME: installed as rendr::<module> (cmake/Install.cmake), like the in-tree alias.
  set_target_properties(rendr_${module} PROPERTIES POSITION_INDEPENDENT_CODE ON
                                                  EXPORT_NAME ${module})
  rendr_warnings(rendr_${module})
endfunction()
