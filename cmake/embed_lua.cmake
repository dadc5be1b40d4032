# Embeds Lua scripts into a C++ header at build time (run with `cmake -P`):
#
#   cmake -DOUT=<header> -DNAMESPACE=<c++ namespace> -DINPUTS=<a.lua|b.lua> -P embed_lua.cmake
#
# Each script becomes `inline constexpr const char* k<Name>`, <Name> being its file name in
# CamelCase (holders_max.lua -> kHoldersMax). A line `--#include other.lua` is replaced by that
# file (same folder), so shared Lua (the log's trim) is written once. The scripts stay real
# .lua files that an editor, a linter and `redis-cli --eval` understand.
cmake_minimum_required(VERSION 3.20)
set(body "// Generated from ${NAMESPACE}'s .lua files by cmake/embed_lua.cmake: edit the .lua files.\n#pragma once\n\nnamespace ${NAMESPACE} {\n")
string(REPLACE "|" ";" INPUTS "${INPUTS}")
foreach(in IN LISTS INPUTS)
  get_filename_component(dir "${in}" DIRECTORY)
  get_filename_component(stem "${in}" NAME_WE)
  file(READ "${in}" text)
  string(REGEX MATCHALL "--#include [A-Za-z0-9_]+\\.lua" includes "${text}")
  foreach(inc IN LISTS includes)
    string(REPLACE "--#include " "" inc_file "${inc}")
    file(READ "${dir}/${inc_file}" inc_text)
    string(REPLACE "${inc}" "${inc_text}" text "${text}")
  endforeach()
  if(text MATCHES "\\)lua\"")
    message(FATAL_ERROR "${in} contains the raw-string delimiter )lua\"")
  endif()
  string(REPLACE "_" ";" parts "${stem}")
  set(name "k")
  foreach(p IN LISTS parts)
    string(SUBSTRING "${p}" 0 1 first)
    string(TOUPPER "${first}" first)
    string(SUBSTRING "${p}" 1 -1 rest)
    string(APPEND name "${first}${rest}")
  endforeach()
  string(APPEND body "\n// ${stem}.lua\ninline constexpr const char* ${name} = R\"lua(${text})lua\";\n")
endforeach()
string(APPEND body "\n}  // namespace ${NAMESPACE}\n")
# Rewrite only on change, so that dependents are not rebuilt needlessly.
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL body)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${body}")
