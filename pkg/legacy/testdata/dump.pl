#!/usr/bin/perl
# Prints "diskd:" and YAML::XS::Dump of the list read as JSON on stdin:
# what the original App::Diskd 0.01 sends for that list (its
# pack_our_disk_list is `"diskd:" . Dump $list`). Makes the golden files
# of the encoder test: go test ./pkg/legacy -run TestEncodeGolden -perl-golden
use strict;
use warnings;
use JSON::PP;
use YAML::XS;
binmode STDIN;
binmode STDOUT;
local $/;
my $list = JSON::PP->new->utf8->decode(<STDIN>);
print "diskd:" . Dump($list);
