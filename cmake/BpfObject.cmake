# SPDX-License-Identifier: Apache-2.0
# bpf_object(<name> <src.bpf.c> [INCLUDES dir...] [DEPENDS file...])
#
# Compiles one BPF program family with clang (-g -O2 -target bpf -mcpu=v3, STYLE B4/B5: no
# vmlinux.h, no CO-RE; UAPI headers found through clang's own system include dirs passed as
# -idirafter), turns the object into a libbpf skeleton with `bpftool gen skeleton ... name <name>`
# and exposes it as INTERFACE target <name>: linking it adds the directory holding <name>.skel.h
# as a SYSTEM include (generated code is not held to our warnings) and libbpf.
#
# The skeleton struct and its C++ wrappers are named <name> (e.g. `freeze_tc::open()`), so <name>
# must be a C identifier. Header dependencies of the .bpf.c are tracked through a depfile.
include_guard(GLOBAL)

find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBBPF REQUIRED IMPORTED_TARGET libbpf)
find_program(RENDR_BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(RENDR_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

# clang's system include search list ("#include <...> search starts here:" block of `clang -v`),
# passed as -idirafter so <linux/bpf.h> and <asm/types.h> resolve for -target bpf.
if(NOT DEFINED RENDR_BPF_SYSTEM_INCLUDES)
  execute_process(COMMAND ${RENDR_BPF_CLANG} -v -E -x c -
                  INPUT_FILE /dev/null OUTPUT_QUIET ERROR_VARIABLE clang_v RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "bpf_object: '${RENDR_BPF_CLANG} -v -E' failed: ${clang_v}")
  endif()
  string(REGEX MATCH "#include <\\.\\.\\.> search starts here:\n(.*)\nEnd of search list" _ "${clang_v}")
  string(REPLACE "\n" ";" dirs "${CMAKE_MATCH_1}")
  set(flags "")
  foreach(d IN LISTS dirs)
    string(STRIP "${d}" d)
    if(d)
      list(APPEND flags "-idirafter" "${d}")
    endif()
  endforeach()
  set(RENDR_BPF_SYSTEM_INCLUDES "${flags}" CACHE INTERNAL "clang system include flags for BPF")
endif()

function(bpf_object name src)
  cmake_parse_arguments(ARG "" "" "INCLUDES;DEPENDS" ${ARGN})
  get_filename_component(src_abs "${src}" ABSOLUTE)
  set(out_dir "${CMAKE_CURRENT_BINARY_DIR}/bpf")
  set(obj "${out_dir}/${name}.bpf.o")
  set(skel_dir "${out_dir}/include")
  set(skel "${skel_dir}/${name}.skel.h")
  set(dep "${out_dir}/${name}.bpf.d")
  set(inc_flags "")
  foreach(i IN LISTS ARG_INCLUDES)
    get_filename_component(i_abs "${i}" ABSOLUTE)
    list(APPEND inc_flags "-I${i_abs}")
  endforeach()

  file(MAKE_DIRECTORY "${out_dir}" "${skel_dir}")
  add_custom_command(
    OUTPUT "${obj}"
    COMMAND ${RENDR_BPF_CLANG} -g -O2 -target bpf -mcpu=v3 -Wall -Wextra -Wno-unused-parameter
            -Werror ${inc_flags} ${RENDR_BPF_SYSTEM_INCLUDES}
            -MD -MF "${dep}" -c "${src_abs}" -o "${obj}"
    DEPENDS "${src_abs}" ${ARG_DEPENDS}
    DEPFILE "${dep}"
    COMMENT "BPF ${name}: clang -target bpf ${src}"
    VERBATIM)
  # Write to a temporary file first so a failing bpftool never leaves a truncated header.
  add_custom_command(
    OUTPUT "${skel}"
    COMMAND sh -c "\"$1\" gen skeleton \"$2\" name \"$3\" > \"$4.tmp\" && mv \"$4.tmp\" \"$4\""
            bpf_object "${RENDR_BPFTOOL}" "${obj}" "${name}" "${skel}"
    DEPENDS "${obj}"
    COMMENT "BPF ${name}: bpftool gen skeleton"
    VERBATIM)
  add_custom_target(${name}_skel DEPENDS "${skel}")

  add_library(${name} INTERFACE)
  add_dependencies(${name} ${name}_skel)
  target_include_directories(${name} SYSTEM INTERFACE "${skel_dir}")
  target_link_libraries(${name} INTERFACE PkgConfig::LIBBPF)
endfunction()
