"""Sharing the cache through an S3-compatible remote.

``archive``  one entry as a zstd-compressed tar: packed from, and checked into, a store;
``s3``       the bucket: object names, transfers, errors (the only boto3 importer);
``sync``     ``kache sync``: pull what a workspace's Cargo.lock needs, push what is local.

Importing this package (or ``archive``/``s3``) imports neither boto3 nor zstandard; they
are imported where a transfer or an archive is made.
"""
