"""The public rules of pyimg (this file only re-exports; see rules/private/)."""

load("@pyimg//rules/private:deb.bzl", _deb_layer = "deb_layer")
load("@pyimg//rules/private:node.bzl", _NpmPackageInfo = "NpmPackageInfo", _npm_layer = "npm_layer")
load("@pyimg//rules/private:basic.bzl", _filegroup = "filegroup", _genrule = "genrule", _host_tool = "host_tool")
load(
    "@pyimg//rules/private:oci.bzl",
    _oci_image = "oci_image",
    _oci_image_index = "oci_image_index",
    _oci_layout = "oci_layout",
    _oci_load = "oci_load",
    _oci_push = "oci_push",
)
load("@pyimg//rules/private:pkg.bzl", _pkg_tar = "pkg_tar")
load("@pyimg//rules/private:sbom.bzl", _oci_sbom = "oci_sbom")
load("@pyimg//rules/private:python.bzl", _PyPackageInfo = "PyPackageInfo", _py_layer = "py_layer")
load(
    "@pyimg//rules:providers.bzl",
    _HostToolInfo = "HostToolInfo",
    _OciImageIndexInfo = "OciImageIndexInfo",
    _OciImageInfo = "OciImageInfo",
    _OciLayerInfo = "OciLayerInfo",
    _OciPushInfo = "OciPushInfo",
)

deb_layer = _deb_layer
filegroup = _filegroup
genrule = _genrule
host_tool = _host_tool
npm_layer = _npm_layer
oci_image = _oci_image
oci_image_index = _oci_image_index
oci_layout = _oci_layout
oci_load = _oci_load
oci_push = _oci_push
oci_sbom = _oci_sbom
pkg_tar = _pkg_tar
py_layer = _py_layer

HostToolInfo = _HostToolInfo
OciImageIndexInfo = _OciImageIndexInfo
OciImageInfo = _OciImageInfo
OciLayerInfo = _OciLayerInfo
OciPushInfo = _OciPushInfo
PyPackageInfo = _PyPackageInfo
NpmPackageInfo = _NpmPackageInfo
