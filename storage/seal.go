package storage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SealLen is what Seal puts in front of a value.
const SealLen = 4

// Seal is v as stored under k in bbolt: a CRC-32C of the key and the value
// in front, so that a value that was damaged, or that is found under
// another key, fails Unseal.
func Seal(k, v []byte) []byte {
	out := make([]byte, SealLen, SealLen+len(v))
	binary.BigEndian.PutUint32(out, sealCRC(k, v))
	return append(out, v...)
}

// Unseal checks a value Seal stored under k and returns what was sealed
// (inside stored's memory: a bbolt value is only valid in its
// transaction). A mismatch wraps ErrCorrupt.
func Unseal(k, stored []byte) ([]byte, error) {
	if len(stored) < SealLen || binary.BigEndian.Uint32(stored) != sealCRC(k, stored[SealLen:]) {
		return nil, fmt.Errorf("%w: the value at key %x fails its checksum", ErrCorrupt, k)
	}
	return stored[SealLen:], nil
}

func sealCRC(k, v []byte) uint32 {
	return crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, v)
}
