/*
 * status_page.h - the admin listener's status page, src/status_page.html,
 * as bytes in the binary.
 *
 * The C file that defines them is generated at build time by
 * cmake/EmbedFile.cmake (CMake alone, no other tool); the HTML stays a real
 * file to edit and to open in a browser. The bytes are followed by a NUL
 * that sl_status_page_len does not count.
 */
#ifndef SL_STATUS_PAGE_H
#define SL_STATUS_PAGE_H

#include <stddef.h>

extern const unsigned char sl_status_page[];
extern const size_t sl_status_page_len;

#endif
