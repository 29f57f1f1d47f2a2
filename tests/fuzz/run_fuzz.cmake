# SPDX-License-Identifier: Apache-2.0
# ctest driver for one libFuzzer target (cmake -P): regenerate the seed corpus, run the fuzzer
# for a bounded time over a fresh work corpus plus the seeds, fail on any crash, sanitizer report
# or oracle abort. Crash inputs are kept under ${WORK}/artifacts/ for reproduction:
#   <fuzzer> <artifact>
# Inputs: FUZZER, SEEDGEN, WORK, SECONDS.
foreach(v FUZZER SEEDGEN WORK SECONDS)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_fuzz.cmake: -D${v}=... missing")
  endif()
endforeach()

set(seeds ${WORK}/seeds)
set(corpus ${WORK}/corpus)
set(artifacts ${WORK}/artifacts)
file(REMOVE_RECURSE ${seeds} ${corpus})
file(MAKE_DIRECTORY ${seeds} ${corpus} ${artifacts})

execute_process(COMMAND ${SEEDGEN} ${seeds} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "seed generator failed (${rc})")
endif()

# New inputs go to the first directory (the throw-away work corpus), never into the seeds.
set(ENV{ASAN_OPTIONS} "abort_on_error=1:detect_leaks=1:symbolize=1")
set(ENV{UBSAN_OPTIONS} "halt_on_error=1:abort_on_error=1:print_stacktrace=1")
execute_process(
  COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048 -max_len=8192
          -print_final_stats=1 -artifact_prefix=${artifacts}/ ${corpus} ${seeds}
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE out)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "fuzzer failed (exit ${rc}); crash inputs in ${artifacts}/")
endif()
# libFuzzer exits 0 after max_total_time; make sure it really executed inputs.
if(NOT out MATCHES "stat::number_of_executed_units: *([0-9]+)")
  message(FATAL_ERROR "fuzzer printed no final stats")
endif()
if(CMAKE_MATCH_1 LESS 1000)
  message(FATAL_ERROR "fuzzer executed only ${CMAKE_MATCH_1} inputs")
endif()
message(STATUS "fuzz: ${CMAKE_MATCH_1} inputs executed in ${SECONDS} s")
