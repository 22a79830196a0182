# Write a C file holding the bytes of another file, for a binary that must
# carry it (the status page). CMake alone, run as a script at build time:
#
#   cmake -DIN=page.html -DOUT=page.c -DNAME=sl_page -DHEADER=page.h -P EmbedFile.cmake
#
# defines `const unsigned char NAME[]` (the bytes and a NUL) and
# `const size_t NAME_len` (without the NUL), after #include "HEADER".
foreach(var IN ITEMS IN OUT NAME HEADER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "EmbedFile.cmake: -D${var}= is required")
  endif()
endforeach()

file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){20})" "\\1\n" bytes "${bytes}")
get_filename_component(in_name "${IN}" NAME)

file(WRITE "${OUT}.tmp"
  "/* Generated from ${in_name} by cmake/EmbedFile.cmake: edit that file, not this one. */\n"
  "#include \"${HEADER}\"\n\n"
  "const unsigned char ${NAME}[] = {\n${bytes}0x00};\n"
  "const size_t ${NAME}_len = ${size};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
