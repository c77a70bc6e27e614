# The libFuzzer harnesses (tests/fuzz/fuzz_<name>.c), in two roles.
#
# HR_FUZZ=ON (the debug build of `make debug` / `make test`): where clang can
# link -fsanitize=fuzzer (Debian: clang and libclang-rt-14-dev, which
# scripts/install-deps installs), the harnesses are built by clang in a build
# of this project of their own, <build>/fuzz (an ExternalProject configured
# with HR_FUZZ_HARNESSES=ON: the same source lists and definitions as the
# libraries, so they cannot drift apart), and each runs HR_FUZZ_SECONDS on
# its seeds as the test fuzz_<name> (label "fuzz"). Without such a clang one
# test, fuzz_harnesses, is skipped and says why.
#
# HR_FUZZ_HARNESSES=ON (that build, or one made by hand as tests/fuzz/README.md
# shows): every library compiled with AddressSanitizer, UndefinedBehavior-
# Sanitizer and libFuzzer's coverage (through HR_SANITIZE), and one
# executable per harness; the target fuzz_all builds them all.
#
# Each harness's longest input and dictionary: name max_len dict ("-": none).
set(HR_FUZZ_TABLE
  "trace  8192  trace.dict"
  "config 20000 -"
  "broker 4096  broker.dict")
set(HR_FUZZ_SECONDS 5 CACHE STRING "Seconds each fuzz harness runs in the tests")

file(GLOB HR_FUZZ_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_*.c)

if(HR_FUZZ_HARNESSES)
  add_custom_target(fuzz_all)
  foreach(src ${HR_FUZZ_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} EXCLUDE_FROM_ALL ${src})
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE headroom_daemon)
    add_dependencies(fuzz_all ${name})
  endforeach()
  return()
endif()
if(NOT HR_FUZZ)
  return()
endif()

# Is there a clang that links a libFuzzer program with both sanitizers?
find_program(HR_FUZZ_CC NAMES clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14)
set(hr_fuzz_why "no clang on the PATH")
if(HR_FUZZ_CC)
  set(hr_probe ${PROJECT_BINARY_DIR}/fuzz-probe)
  file(WRITE ${hr_probe}.c "#include <stddef.h>\n#include <stdint.h>\n"
    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
  execute_process(COMMAND ${HR_FUZZ_CC} -fsanitize=fuzzer,address,undefined ${hr_probe}.c
    -o ${hr_probe} RESULT_VARIABLE hr_rc OUTPUT_QUIET ERROR_VARIABLE hr_err)
  if(hr_rc EQUAL 0)
    set(hr_fuzz_why "")
  else()
    set(hr_fuzz_why "${HR_FUZZ_CC} cannot link -fsanitize=fuzzer (the libFuzzer runtime is missing)")
  endif()
endif()

if(hr_fuzz_why)
  message(STATUS "Fuzz harnesses not built: ${hr_fuzz_why}")
  string(CONCAT hr_msg "fuzz harnesses not built: ${hr_fuzz_why}; on Debian apt-get install "
    "clang libclang-rt-dev (bookworm: libclang-rt-14-dev; scripts/install-deps does)")
  add_test(NAME fuzz_harnesses COMMAND sh -c "echo '${hr_msg}'; exit 77")
  set_tests_properties(fuzz_harnesses PROPERTIES LABELS fuzz SKIP_RETURN_CODE 77)
  return()
endif()

include(ExternalProject)
cmake_host_system_information(RESULT hr_cores QUERY NUMBER_OF_LOGICAL_CORES)
ExternalProject_Add(fuzz_harnesses
  SOURCE_DIR ${PROJECT_SOURCE_DIR}
  BINARY_DIR ${PROJECT_BINARY_DIR}/fuzz
  CMAKE_ARGS -DCMAKE_C_COMPILER=${HR_FUZZ_CC} -DCMAKE_BUILD_TYPE=Debug
    "-DCMAKE_C_FLAGS_DEBUG=-g -O1" -DHR_SANITIZE=fuzzer-no-link,address,undefined
    -DHR_FUZZ_HARNESSES=ON -DHR_WERROR=${HR_WERROR}
  BUILD_COMMAND ${CMAKE_COMMAND} --build <BINARY_DIR> --target fuzz_all --parallel ${hr_cores}
  INSTALL_COMMAND ""
  BUILD_ALWAYS ON)

set(hr_fuzz_names "")
foreach(row ${HR_FUZZ_TABLE})
  string(REGEX REPLACE " +" ";" row "${row}")
  list(GET row 0 name)
  list(APPEND hr_fuzz_names fuzz_${name})
  list(GET row 1 max_len)
  list(GET row 2 dict)
  set(dict_arg "")
  if(NOT dict STREQUAL "-")
    set(dict_arg ${PROJECT_SOURCE_DIR}/tests/fuzz/${dict})
  endif()
  add_test(NAME fuzz_${name} COMMAND sh ${PROJECT_SOURCE_DIR}/tests/fuzz/smoke.sh
    ${PROJECT_BINARY_DIR}/fuzz/fuzz_${name} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${name}
    ${HR_FUZZ_SECONDS} ${max_len} ${dict_arg})
  set_tests_properties(fuzz_${name} PROPERTIES LABELS fuzz TIMEOUT 300)
endforeach()
foreach(src ${HR_FUZZ_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  if(NOT name IN_LIST hr_fuzz_names)
    message(FATAL_ERROR "${src}: give it a row in HR_FUZZ_TABLE (cmake/fuzz.cmake)")
  endif()
endforeach()
