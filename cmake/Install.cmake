# SPDX-License-Identifier: Apache-2.0
# cmake --install: the libraries embedders link (rendr::common, rendr::repair, rendr::engine,
# rendr::agentproto, rendr::embed) with their public headers, a CMake package (find_package(rendr))
# and a pkg-config file (rendr.pc), plus the operator programs. docs/install.md.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# rendr_engine_core: the engine's I/O-free core, linked by rendr_engine (its headers stay private).
set(RENDR_INSTALL_LIBS rendr_common rendr_repair rendr_engine_core rendr_engine rendr_agentproto
                      rendr_embed)
# Components: "dev" (libraries, headers, CMake package, rendr.pc) and "programs" (the tools and
# docs); `cmake --install build --component dev` installs only what an embedder builds against.
install(TARGETS ${RENDR_INSTALL_LIBS} EXPORT rendrTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(dir common/include repair/include engine/include agents/include)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          COMPONENT dev FILES_MATCHING PATTERN "*.hpp")
endforeach()

set(RENDR_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/rendr)
install(EXPORT rendrTargets NAMESPACE rendr:: DESTINATION ${RENDR_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/rendrConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/rendrConfig.cmake
                              INSTALL_DESTINATION ${RENDR_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/rendrConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/rendrConfig.cmake ${PROJECT_BINARY_DIR}/rendrConfigVersion.cmake
        DESTINATION ${RENDR_CMAKE_DIR} COMPONENT dev)

# rendr.pc: the prefix is taken from the .pc file's own location, so a relocated or
# --prefix'ed install works without editing it.
file(RELATIVE_PATH RENDR_PC_INCLUDE_REL /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig
     /prefix/${CMAKE_INSTALL_INCLUDEDIR})
configure_file(${PROJECT_SOURCE_DIR}/cmake/rendr.pc.in ${PROJECT_BINARY_DIR}/rendr.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/rendr.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT dev)

set(RENDR_INSTALL_PROGRAMS rendr-agent rendrctl rendr-lab rendr-bench rendr-fileserver
                           rendr-impair rendr-demo)
install(TARGETS ${RENDR_INSTALL_PROGRAMS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        COMPONENT programs)
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE ${PROJECT_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT programs)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
        COMPONENT programs)
